"""An agency's agent: the HTTP API for its systems, its keys, outbox, inbox and evidence.

One message's path through an agent: `agents.api` (`POST /v1/messages`) ->
`agents.submission` (validate, seal, record in the outbox) -> `agents.broker`
(`OutboxRelay` publishes with confirms) ... and on the other side
`agents.broker` (`InboxConsumer`) -> `agents.receiving` (verify, decrypt,
store, sign `DELIVERY`) -> `agents.api` (`GET /v1/inbox`, ack -> `RETRIEVAL`).
"""

from agents.service import run_agent
from agents.settings import AgentSettings

__all__ = ["AgentSettings", "run_agent"]

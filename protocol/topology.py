"""Names of the broker topology that agents, gateway and provisioning share.

One vhost per network; isolation by permission, not by obscurity:

    agent --publish--> [mla.submit] --> (mla.gateway.ingress) --> gateway
    gateway --publish--> [mla.deliver] --routing key = agency--> (mla.inbox.<AGENCY>) --> agent
    rejected or over the delivery limit --> [mla.dead] --> (mla.dead)

Agents get no configure permission, write only `mla.submit` and read only
their own inbox; the gateway reads the ingress and dead-letter queues and
writes `mla.deliver`. Nobody but the provisioner declares anything.
"""

from __future__ import annotations

from typing import Final

from protocol.ids import AgencyId
from protocol.limits import DEFAULT_LIMITS

BROKER_MAX_MESSAGE_BYTES: Final = DEFAULT_LIMITS.max_sealed_bytes + 2 * 1024 * 1024
"""The broker's own `max_message_size` (8 MiB): the largest message of the protocol (a sealed message,
`Limits.max_sealed_bytes`) with 2 MiB of headroom, so a message just over the protocol's limit still
reaches the gateway, which refuses and audits it, while anything larger is refused by the broker before
any consumer buffers it. It also bounds what a consumer holds: prefetch x this."""

SUBMIT_EXCHANGE: Final = "mla.submit"
DELIVER_EXCHANGE: Final = "mla.deliver"
DEAD_LETTER_EXCHANGE: Final = "mla.dead"
INGRESS_QUEUE: Final = "mla.gateway.ingress"
DEAD_LETTER_QUEUE: Final = "mla.dead"
INBOX_QUEUE_PREFIX: Final = "mla.inbox."

# AMQP `type` property of what travels, so consumers dispatch before parsing.
KIND_SEALED_MESSAGE: Final = "rogatory.sealed-message.v1"
KIND_EVIDENCE: Final = "rogatory.evidence.v1"
KIND_EVIDENCE_BATCH: Final = "rogatory.evidence-batch.v1"
"""Several signed evidence statements for one destination in one message (`protocol.evidence.EvidenceBatch`)."""
EVIDENCE_KINDS: Final = frozenset({KIND_EVIDENCE, KIND_EVIDENCE_BATCH})
"""Both ways evidence travels: a receiver takes either (a network mid-upgrade sends both)."""
KIND_DIRECTORY: Final = "rogatory.directory.v1"
"""A signed directory version, as the authority issued it: the gateway pushes each new one to every inbox."""


def inbox_queue(agency: AgencyId) -> str:
    """The quorum queue holding what the gateway delivers to `agency`."""
    return f"{INBOX_QUEUE_PREFIX}{agency}"


__all__ = [
    "BROKER_MAX_MESSAGE_BYTES",
    "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_QUEUE",
    "DELIVER_EXCHANGE",
    "EVIDENCE_KINDS",
    "INBOX_QUEUE_PREFIX",
    "INGRESS_QUEUE",
    "KIND_DIRECTORY",
    "KIND_EVIDENCE",
    "KIND_EVIDENCE_BATCH",
    "KIND_SEALED_MESSAGE",
    "SUBMIT_EXCHANGE",
    "inbox_queue",
]

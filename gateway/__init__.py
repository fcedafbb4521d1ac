"""The audited gateway: verifies each sender, applies the agreements, logs, relays, issues evidence.

Read `gateway.pipeline` first: it is the security argument, step by step.
Then `gateway.auditlog` (the Merkle log), `gateway.broker` (the AMQP roles),
`gateway.api` (audit and operator HTTP API) and `gateway.service` (wiring).
The gateway never holds a key that opens content.
"""

from gateway.service import run_gateway
from gateway.settings import GatewaySettings

__all__ = ["GatewaySettings", "run_gateway"]

"""The exchange policy: may this authenticated message go from its sender to this recipient?

One decision, made twice: the gateway makes it for each recipient before it
accepts a submission (`gateway.pipeline.decide`), and each recipient makes it
again for itself before it opens a delivery (`agents.receiving`), since a
recipient never trusts the gateway. Both call `decide_exchange`, so the two
cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime

from protocol.directory import Agreement, Directory
from protocol.envelope import AuthenticatedHeader
from protocol.ids import AgencyId


def decide_exchange(
    authenticated: AuthenticatedHeader, recipient: AgencyId, directory: Directory, *, now: datetime
) -> Agreement:
    """The agreement in force at `now` allowing sender -> `recipient` for the header's type, or `PolicyDenied`.

    Also, each content key the header wraps for `recipient` is wrapped to an
    encryption key the directory gives that recipient, usable for a message
    of the header's time (`KeyRejected` otherwise).
    """
    header = authenticated.header
    agreement = directory.agreement_for(header.sender, recipient, header.message_type, now)
    for wrapped in header.recipients:
        if wrapped.agency == recipient:
            directory.encryption_key(recipient, wrapped.key_id).check_usable(
                created_at=header.created_at, now=now, what="encryption"
            )
    return agreement


__all__ = ["decide_exchange"]

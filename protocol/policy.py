"""The exchange policy: may this authenticated message go from its sender to this recipient?

One decision, made twice: the gateway makes it for each recipient before it
accepts a submission (`gateway.pipeline.decide`), and each recipient makes it
again for itself before it opens a delivery (`agents.receiving`), since a
recipient never trusts the gateway. Both call `decide_exchange`, so the two
cannot drift apart.

A connectivity test (`protocol.connectivity`, type `CONNECTIVITY_TEST`) is
allowed between two agencies an agreement in force links, in either
direction, whatever types it lists (`linked_agreement`).
"""

from __future__ import annotations

from datetime import datetime

from protocol.connectivity import CONNECTIVITY_TEST, linked_agreement
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
    agreement = exchange_agreement(directory, header.sender, recipient, header.message_type, now)
    for wrapped in header.recipients:
        if wrapped.agency == recipient:
            directory.encryption_key(recipient, wrapped.key_id).check_usable(
                created_at=header.created_at, now=now, what="encryption"
            )
    return agreement


def exchange_agreement(
    directory: Directory, sender: AgencyId, recipient: AgencyId, message_type: str, at: datetime
) -> Agreement:
    """The agreement in force at `at` allowing sender -> recipient this type (a connectivity test: linking them)."""
    if message_type == CONNECTIVITY_TEST:
        return linked_agreement(directory, sender, recipient, at)
    return directory.agreement_for(sender, recipient, message_type, at)


__all__ = ["decide_exchange", "exchange_agreement"]

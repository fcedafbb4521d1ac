"""The account of a verified evidence bundle: a typed value that the command line prints and a report renders.

`protocol.bundle_verify.verify_bundle` makes it. It tells, per message, who
sent what (the document's type, case, languages and title lines, its digest)
and every step after (accepted, relayed, delivered, retrieved, or the negative
evidence), each as an `AccountEvent`: who acted, when (the signer's own
statement), the evidence type, the key that signed it, and the checkpoint of
the audit log that proves it with the witnesses who cosigned that checkpoint.
`items` lists every item check in order, with its status; the bundle holds
only when none failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

SENT: Final = "SENT"
"""The event type of the sender's signature over the header and content statement (not an evidence statement)."""


class ItemStatus(StrEnum):
    """What one item check found."""

    VERIFIED = "VERIFIED"
    FAILED = "FAILED"
    ABSENT = "ABSENT"
    """An optional item (report, time-stamp) the bundle does not hold: reported, not a failure."""
    UNCHECKED = "UNCHECKED"
    """An optional item the bundle holds but this verifier was not given the means to check (the signed report
    without the network CA): reported, not a failure, and not vouched for."""


class ItemKind(StrEnum):
    """The kinds of item a bundle holds; each failure names its item and kind."""

    BUNDLE = "bundle"
    MANIFEST = "manifest"
    MEMBER = "member"
    DIRECTORY = "directory"
    DIRECTORY_INCLUSION = "directory inclusion proof"
    CHECKPOINT = "checkpoint"
    COSIGNATURE = "cosignature"
    WITNESSES = "witnesses"
    CONSISTENCY = "consistency proof"
    HEADER = "header"
    CONTENT_STATEMENT = "content statement"
    DOCUMENT = "document"
    DOCUMENT_SIGNATURE = "document signature"
    EVIDENCE = "evidence"
    INCLUSION = "inclusion proof"
    TIMESTAMP = "time-stamp"
    REPORT = "report"


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The verdict on one item: which one (a name a reader can find in the bundle), what kind, what was found."""

    item: str
    kind: ItemKind
    status: ItemStatus
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ProvingCheckpoint:
    """A checkpoint of the audit log: its size, root and the agencies whose cosignatures on it verified."""

    tree_size: int
    root_hash_hex: str
    witnesses: tuple[str, ...]
    timestamped: bool = False


@dataclass(frozen=True, slots=True)
class AccountEvent:
    """One step in a message's life, as signed by whoever took it."""

    actor: str
    """An agency id, or the gateway's id."""
    at: datetime
    evidence_type: str
    """`SENT` for the sender's own signature, else an `EvidenceType` value."""
    signer_key: str
    recipient: str | None
    checkpoint: ProvingCheckpoint | None
    """The checkpoint the step's inclusion proof leads to (None for `SENT`: the signed header proves it)."""
    reason: str | None = None
    """Negative evidence: the reason code and text."""


@dataclass(frozen=True, slots=True)
class MessageAccount:
    """One message: the document as signed, and its events in time order."""

    message_id: str
    direction: str
    sender: str
    recipients: tuple[str, ...]
    message_type: str
    case_id: str
    document_sha256: str
    document_bytes: int
    languages: tuple[str, ...]
    title_lines: tuple[str, ...]
    events: tuple[AccountEvent, ...]


@dataclass(frozen=True, slots=True)
class BundleAccount:
    """Everything the verifier found in a bundle, in the order a reader wants it."""

    scope: str
    subject: str
    exported_by: str
    exported_at: datetime | None
    log_origin: str
    latest: ProvingCheckpoint | None
    messages: tuple[MessageAccount, ...]
    directory_versions: tuple[int, ...]
    items: tuple[ItemResult, ...]
    bundle_bytes: int

    @property
    def verified(self) -> bool:
        """Whether every item check held (absent optional items do not count against it)."""
        return bool(self.items) and not any(item.status == ItemStatus.FAILED for item in self.items)

    @property
    def first_failure(self) -> ItemResult | None:
        """The first item that did not verify, if any."""
        return next((item for item in self.items if item.status == ItemStatus.FAILED), None)


__all__ = [
    "SENT",
    "AccountEvent",
    "BundleAccount",
    "ItemKind",
    "ItemResult",
    "ItemStatus",
    "MessageAccount",
    "ProvingCheckpoint",
]

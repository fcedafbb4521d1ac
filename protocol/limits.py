"""Every size, count and time limit of the exchange, with its unit and reason.

Services pass a `Limits` value down explicitly; nothing in the core reads a
limit from anywhere else. Tests shrink them to make attacks cheap to try.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits applied by agents and gateway alike."""

    max_document_bytes: int = 4 * 1024 * 1024
    """A message document (JSON) as submitted: the largest sample is 44 KB; large
    evidence travels as attachments, so 4 MiB leaves room without inviting abuse."""

    max_json_depth: int = 48
    """Nesting of any JSON we parse; the deepest sample nests 9 levels."""

    max_header_bytes: int = 64 * 1024
    """The signed envelope header: wrapped keys and digests, never content."""

    max_sealed_bytes: int = 6 * 1024 * 1024
    """A whole sealed message on the wire: the document plus signatures and framing."""

    max_recipients: int = 16
    """Recipients of one message, each with a wrapped key in the header."""

    max_evidence_bytes: int = 16 * 1024
    """A signed evidence statement as it travels."""

    max_evidence_batch_statements: int = 64
    """Statements in one evidence batch: enough to cut the broker's messages by an order of magnitude
    at saturation, few enough that one bad or slow batch holds little back."""

    max_evidence_batch_bytes: int = 1024 * 1024
    """An evidence batch as it travels (the statements with their framing): far under the broker's
    own limit (`protocol.topology.BROKER_MAX_MESSAGE_BYTES`)."""

    max_directory_bytes: int = 8 * 1024 * 1024
    """A signed directory: agencies, keys and agreements of a whole network."""

    max_clock_skew: timedelta = timedelta(minutes=5)
    """How far the clocks of agents and gateway may drift apart: an envelope's `created_at` may
    lie this far after the receiver's now, and the gateway takes evidence dated this far after
    its now or before it accepted the message the evidence is about."""

    retired_key_grace: timedelta = timedelta(days=1)
    """How long after its `valid_until` a signing key still vouches for what it signed while valid
    (judged on the receiver's clock, whatever time the signer claims): mail sealed just before a
    rotation that waited in an outbox or a queue (a broker or a recipient away overnight). Past it
    the key vouches for nothing, so a rotated-out key that leaks can sign messages or evidence
    backdated into its validity for at most this long, not for the whole replay window."""

    replay_window: timedelta = timedelta(days=7)
    """How long a message id is remembered; an envelope older than this is stale,
    since its id may no longer be on record to detect a replay."""

    max_message_ttl: timedelta = timedelta(days=7)
    """The longest `expires_at - created_at` an envelope may ask for; not more than
    the replay window, so that an unexpired message is always checked for replay."""

    def __post_init__(self) -> None:
        if self.max_message_ttl > self.replay_window:
            raise ValueError("max_message_ttl must not exceed replay_window")


DEFAULT_LIMITS = Limits()

__all__ = ["DEFAULT_LIMITS", "Limits"]

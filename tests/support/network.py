"""An in-memory network for protocol tests: agencies, keys, a signed directory, a clock."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from protocol.directory import (
    AgencyEntry,
    Agreement,
    AgreementRule,
    Directory,
    GatewayEntry,
    PublishedEncryptionKey,
    PublishedSigningKey,
    sign_directory,
)
from protocol.envelope import Recipient, SealedMessage, seal
from protocol.ids import AgencyId, CaseId, GatewayId, KeyId, MessageId
from protocol.keys import EncryptionPrivateKey, SigningPrivateKey
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.signing import SignedStatement

NOW = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
BD = AgencyId("BD-MOHA-PSD")
LY = AgencyId("LY-MLA-CA")
BD_POLICE = AgencyId("BD-POLICE-CID-HTU")
LY_AGO = AgencyId("LY-AGO")


@dataclass
class AgencyKeys:
    """One agency's private keys."""

    agency: AgencyId
    signing: SigningPrivateKey = field(default_factory=SigningPrivateKey.generate)
    encryption: EncryptionPrivateKey = field(default_factory=EncryptionPrivateKey.generate)

    @property
    def decryption_keys(self) -> dict[KeyId, EncryptionPrivateKey]:
        """Keys by id, as `open_sealed` takes them."""
        return {self.encryption.key_id: self.encryption}


def published(
    key: SigningPrivateKey | EncryptionPrivateKey,
    *,
    days: int = 365,
    revoked_at: datetime | None = None,
    valid_from: datetime | None = None,
) -> dict[str, object]:
    """The directory entry of a key."""
    return {
        "key_id": key.key_id,
        "public_key": key.public_key.raw,
        "valid_from": valid_from or NOW - timedelta(days=1),
        "valid_until": NOW + timedelta(days=days),
        "revoked_at": revoked_at,
    }


@dataclass
class LocalNetwork:
    """Four agencies, a gateway, an authority and a signed directory."""

    authority: SigningPrivateKey = field(default_factory=SigningPrivateKey.generate)
    evidence_key: SigningPrivateKey = field(default_factory=SigningPrivateKey.generate)
    log_key: SigningPrivateKey = field(default_factory=SigningPrivateKey.generate)
    agencies: dict[AgencyId, AgencyKeys] = field(default_factory=dict)
    limits: Limits = DEFAULT_LIMITS
    version: int = 1

    def __post_init__(self) -> None:
        for agency in (BD, LY, BD_POLICE, LY_AGO):
            self.agencies.setdefault(agency, AgencyKeys(agency))

    def __getitem__(self, agency: AgencyId) -> AgencyKeys:
        return self.agencies[agency]

    def directory(self, **changes: object) -> Directory:
        """The directory of this network (with `changes` applied to its fields)."""
        entries = []
        for agency, keys in self.agencies.items():
            entries.append(
                AgencyEntry.model_validate(
                    {
                        "agency_id": agency,
                        "name": f"{agency} (test)",
                        "country": agency[:2],
                        "signing_keys": (PublishedSigningKey.model_validate(published(keys.signing)),),
                        "encryption_keys": (PublishedEncryptionKey.model_validate(published(keys.encryption)),),
                    }
                )
            )
        fields: dict[str, object] = {
            "network": "test",
            "version": self.version,
            "issued_at": NOW - timedelta(hours=1),
            "expires_at": NOW + timedelta(days=30),
            "authority_key": self.authority.key_id,
            "agencies": tuple(entries),
            "gateway": GatewayEntry(
                gateway_id=GatewayId("gateway.test"),
                evidence_keys=(PublishedSigningKey.model_validate(published(self.evidence_key)),),
                log_keys=(PublishedSigningKey.model_validate(published(self.log_key)),),
                log_origin="rogatory.test/audit-log",
            ),
            "agreements": (
                Agreement(
                    agreement_id="BD-LY",
                    title="BD-LY central authorities",
                    valid_from=NOW - timedelta(days=1),
                    valid_until=NOW + timedelta(days=365),
                    rules=(
                        AgreementRule(senders=(BD,), recipients=(LY,), message_types=("*",)),
                        AgreementRule(senders=(LY,), recipients=(BD,), message_types=("*",)),
                    ),
                ),
            ),
        }
        fields.update(changes)
        return Directory.model_validate(fields)

    def signed_directory(self, **changes: object) -> SignedStatement:
        """The directory, signed by the authority."""
        return sign_directory(self.directory(**changes), self.authority)

    def seal(
        self,
        document: bytes = b'{"hello":"world"}',
        *,
        sender: AgencyId = BD,
        recipients: tuple[AgencyId, ...] = (LY,),
        message_id: MessageId | None = None,
        message_type: str = "MLA_REQUEST",
        created_at: datetime = NOW,
        ttl: timedelta = timedelta(days=1),
    ) -> SealedMessage:
        """A message sealed by `sender` for `recipients`."""
        return seal(
            document,
            message_id=message_id or MessageId(uuid.uuid4()),
            sender=sender,
            signing_key=self.agencies[sender].signing,
            recipients=[Recipient(r, self.agencies[r].encryption.public_key) for r in recipients],
            archive_key=self.agencies[sender].encryption.public_key,
            message_type=message_type,
            case_id=CaseId("BD-LY-2025-0007"),
            created_at=created_at,
            expires_at=created_at + ttl,
            limits=self.limits,
        )

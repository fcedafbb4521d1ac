"""A sample case's report (BD-LY-2025-0007, fifteen messages from deploy/samples, Arabic and Bengali text),
the network CA and the gateway's document-signing certificate, and where the pictures go."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deploy.provision.tls import ensure_ca, issue_document_signing_files
from protocol.reports import ProvenMessage, ProvenStatement, ReportProof
from runtime.reports.account import CaseReport, ReportEvent, ReportMessage, document_lines, localized
from runtime.reports.fonts import ReportFonts, find_fonts
from runtime.reports.pades import ReportSigner, load_report_signer

REPOSITORY = Path(__file__).resolve().parents[2]
SAMPLES = REPOSITORY / "deploy" / "samples"
ARTIFACTS = Path(os.environ.get("ROGATORY_REPORT_ARTIFACTS", REPOSITORY / "test-artifacts" / "reports"))
"""Where the rasterised pages and line comparisons go (beside the browser tests' screenshots)."""
CASE = "BD-LY-2025-0007"
DRAWN_AT = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
GATEWAY = "gateway.test"
LOG_ORIGIN = "rogatory.test/audit-log"
LANGUAGES = ("en", "ar", "bn")


def sample_documents(case: str = CASE) -> list[dict[str, object]]:
    """The case's sample documents, in their order."""
    return [json.loads(path.read_text("utf-8")) for path in sorted(SAMPLES.glob(f"{case}_*.json"))]


def _party(document: dict[str, object], which: str) -> str:
    entry = document[which]
    assert isinstance(entry, dict)
    return str(entry["authority_id"])


def _events(document: dict[str, object], written: datetime) -> tuple[ReportEvent, ...]:
    sender, recipient = _party(document, "sender"), _party(document, "recipient")
    steps = [
        (sender, "SENT", None),
        (GATEWAY, "SUBMISSION_ACCEPTED", 1),
        (GATEWAY, "RELAY_ACCEPTED", 2),
        (recipient, "DELIVERY", 3),
        (recipient, "RETRIEVAL", 4),
    ]
    return tuple(
        ReportEvent(
            actor=actor,
            at=written + timedelta(minutes=minutes or 0),
            evidence_type=kind,
            signer_key=hashlib.sha256(actor.encode()).hexdigest()[:16],
            recipient=None if kind == "SENT" else recipient,
            checkpoint_size=None if minutes is None else 40 + minutes,
            witnesses=() if minutes is None else ("BD-MOHA-PSD", "LY-MLA-CA"),
        )
        for actor, kind, minutes in steps
    )


def _title(request: dict[str, object]) -> tuple[str, ...]:
    """The case's title: the first offence of its request, in every language it is given in."""
    payload = request["payload"]
    assert isinstance(payload, dict)
    found = dict(localized(payload["offences"][0]["title"]))
    return tuple(found[lang] for lang in LANGUAGES if lang in found)


def sample_case_report(case: str = CASE) -> tuple[CaseReport, ReportProof]:
    """The report of a sample case as the Bangladeshi central authority would draw it, and its proof."""
    documents = sample_documents(case)
    messages, proven = [], []
    for document in documents:
        written = datetime.fromisoformat(str(document["created_at"])).astimezone(UTC)
        events = _events(document, written)
        messages.append(
            ReportMessage(
                message_id=str(document["message_id"]),
                sender=_party(document, "sender"),
                recipients=(_party(document, "recipient"),),
                message_type=str(document["message_type"]),
                sequence=int(str(document["sequence"])),
                created_at=written,
                lines=document_lines(document, LANGUAGES),
                events=events,
            )
        )
        proven.append(
            ProvenMessage.model_validate(
                {
                    "message_id": str(document["message_id"]),
                    "sender": _party(document, "sender"),
                    "recipients": (_party(document, "recipient"),),
                    "message_type": str(document["message_type"]),
                    "statements": tuple(
                        ProvenStatement(
                            identity=f"{event.evidence_type}/{document['message_id']}",
                            payload_sha256=hashlib.sha256(repr(event).encode()).hexdigest(),
                        )
                        for event in events[1:]
                    ),
                },
                strict=False,
            )
        )
    report = CaseReport(
        case_id=case,
        agency="BD-MOHA-PSD",
        drawn_at=DRAWN_AT,
        log_origin=LOG_ORIGIN,
        languages=LANGUAGES,
        title_lines=_title(documents[0]),
        messages=tuple(messages),
    )
    proof = ReportProof.model_validate(
        {
            "case_id": case,
            "agency": "BD-MOHA-PSD",
            "drawn_at": DRAWN_AT,
            "log_origin": LOG_ORIGIN,
            "messages": tuple(proven),
        },
        strict=False,
    )
    return report, proof


@pytest.fixture(scope="session")
def fonts() -> ReportFonts:
    """The installed Noto fonts (deploy/run installs fonts-noto-core; missing is a failure, not a skip)."""
    return find_fonts()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@dataclass(frozen=True)
class Authority:
    """A network CA and the gateway's document-signing certificate from it."""

    ca_dir: Path
    signer: ReportSigner


def make_authority(root: Path, name: str = "Rogatory network CA") -> Authority:
    ensure_ca(root / "ca", name)
    issued = issue_document_signing_files(root / "ca", GATEWAY, root / "gateway")
    return Authority(root / "ca", load_report_signer(issued.certificate, issued.key, root / "ca" / "ca.pem"))


@pytest.fixture(scope="session")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return make_authority(tmp_path_factory.mktemp("network-ca"))

"""The clerk's page of an evidence bundle: the bundle's account drawn as a PDF, signed by the gateway, put inside.

An exported bundle is first verified as any auditor would (`runtime.bundles`)
to get its account; the account is drawn (`runtime.reports.render`: the
documents' lines in their languages, Arabic and Bengali shaped) with the
bundle's manifest and signature attached inside the PDF, and the proof of
what it lists (each message and the identity and payload digest of each
evidence statement). The gateway signs it as PAdES only after checking that
proof against its log (`gateway.reports`); the signed PDF becomes the
bundle's `report.pdf` (`protocol.bundle`, the report slot), and the bundle's
manifest, signed again, names it. A report is a convenience for a clerk: the
machine-readable proof in the bundle stays what a verifier relies on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog

from protocol.bundle import MANIFEST, MANIFEST_SIGNATURE, read_bundle
from protocol.evidence import EvidenceStatement
from protocol.evidence_account import BundleAccount
from protocol.ids import AgencyId
from protocol.keys import SigningPublicKey
from protocol.model import parse_model
from protocol.reports import ProvenMessage, ProvenStatement, ReportProof
from protocol.signing import SignedStatement
from runtime.bundles import unpack_bundle, verify_bundle_file
from runtime.reports.account import CaseReport, ReportEvent, ReportMessage, document_lines
from runtime.reports.errors import ReportError
from runtime.reports.fonts import ReportFonts
from runtime.reports.render import render_report

log = structlog.get_logger("rogatory.agents.bundle_report")

SignReport = Callable[[bytes], Awaitable[bytes]]
"""Have the gateway sign a drawn report (PDF bytes in, signed PDF out; `ReportError` when refused)."""


def _proof_and_report(raw: bytes, account: BundleAccount, *, drawn_at: datetime) -> tuple[CaseReport, ReportProof]:
    contents = read_bundle(unpack_bundle(raw))
    members = contents.members
    messages, proven = [], []
    for item, told in zip(contents.manifest.messages, account.messages, strict=True):
        document = json.loads(members[item.document])
        statements = [SignedStatement.from_json(members[evidence.path]) for evidence in item.evidence]
        proven.append(
            ProvenMessage.model_validate(
                {
                    "message_id": item.message_id,
                    "sender": item.sender,
                    "recipients": item.recipients,
                    "message_type": item.message_type,
                    "statements": tuple(
                        ProvenStatement(
                            identity=parse_model(EvidenceStatement, signed.payload, what="evidence").identity,
                            payload_sha256=hashlib.sha256(signed.payload).hexdigest(),
                        )
                        for signed in statements
                    ),
                },
                strict=False,
            )
        )
        messages.append(
            ReportMessage(
                message_id=told.message_id,
                sender=told.sender,
                recipients=told.recipients,
                message_type=told.message_type,
                sequence=document.get("sequence") if isinstance(document.get("sequence"), int) else None,
                created_at=next((event.at for event in told.events if event.evidence_type == "SENT"), None),
                lines=document_lines(document),
                events=tuple(
                    ReportEvent(
                        actor=event.actor,
                        at=event.at,
                        evidence_type=event.evidence_type,
                        signer_key=event.signer_key,
                        recipient=event.recipient,
                        checkpoint_size=None if event.checkpoint is None else event.checkpoint.tree_size,
                        witnesses=() if event.checkpoint is None else event.checkpoint.witnesses,
                        reason=event.reason,
                    )
                    for event in told.events
                ),
            )
        )
    case_id = account.messages[0].case_id
    report = CaseReport(
        case_id=case_id,
        agency=account.exported_by,
        drawn_at=drawn_at,
        log_origin=account.log_origin,
        languages=tuple(dict.fromkeys(lang for m in account.messages for lang in m.languages)) or ("en",),
        title_lines=account.messages[0].title_lines,
        messages=tuple(messages),
    )
    proof = ReportProof.model_validate(
        {
            "case_id": case_id,
            "agency": AgencyId(account.exported_by),
            "drawn_at": drawn_at,
            "log_origin": account.log_origin,
            "messages": tuple(proven),
        },
        strict=False,
    )
    return report, proof


async def draw_bundle_report(
    raw: bytes, *, authority: SigningPublicKey, fonts: ReportFonts, sign: SignReport, drawn_at: datetime
) -> bytes | None:
    """The signed report of the bundle `raw` (a bundle without a report), or None when it cannot be made.

    None is logged (`bundle_report_not_made`, with why): the bundle goes out without its report rather than not
    at all; the machine-readable proof is complete without it.
    """
    account = verify_bundle_file(raw, authority=authority)
    if not account.verified:
        failure = account.first_failure
        log.warning("bundle_report_not_made", reason="the bundle does not verify", item=failure and failure.item)
        return None
    report, proof = _proof_and_report(raw, account, drawn_at=drawn_at)
    members = unpack_bundle(raw)
    attached = {MANIFEST: members[MANIFEST], MANIFEST_SIGNATURE: members[MANIFEST_SIGNATURE]}
    try:
        drawn = await asyncio.to_thread(render_report, report, fonts, proof, attached)  # a second of CPU: off the loop
        return await sign(drawn.pdf)
    except ReportError as exc:
        log.warning("bundle_report_not_made", reason=str(exc)[:300], code=str(exc.code))
        return None


__all__ = ["SignReport", "draw_bundle_report"]

"""`rogatory report verify`: check a signed case report offline, with the network CA's certificate alone.

    rogatory report verify REPORT.pdf --ca-file ca.pem [--extract DIR]

Runs `runtime.reports.pades.verify_report`: one PAdES signature covering the
whole file, intact, by a document-signing certificate the network CA issued
(the gateway's), the proof embedded. Prints the signer, the case, the
agency that drew it, each message and how many evidence statements the
gateway checked, and the audit leaf to look up
(`report/<agency>/<SHA-256 of the PDF as drawn>`). `--extract` writes every
embedded file (the proof, the bundle members given) into DIR.

Exit status: 0 verified; 1 the report does not verify (the reason printed,
with its code); 2 usage (the files cannot be read).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

from cryptography import x509

from protocol.auditlog import report_leaf_identity
from runtime.reports.errors import ReportError
from runtime.reports.pades import embedded_files, verify_report

EXIT_INVALID: Final = 1
EXIT_USAGE: Final = 2


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        pdf = Path(args.report).read_bytes()
        ca = x509.load_pem_x509_certificate(Path(args.ca_file).read_bytes())
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"rogatory: cannot read the report or the CA certificate: {exc}\n")
        return EXIT_USAGE
    try:
        verified = verify_report(pdf, ca)
    except ReportError as exc:
        sys.stdout.write(f"NOT VERIFIED {exc.code}: {exc.detail}\n")
        return EXIT_INVALID
    proof = verified.proof
    lines = [
        f"VERIFIED report of case {proof.case_id}, drawn by {proof.agency} at {proof.drawn_at.isoformat()}",
        (
            f"signed by {verified.signer} (certificate SHA-256 {verified.signer_sha256}), "
            f"signing time claimed {verified.signed_at.isoformat() if verified.signed_at else 'none'}"
        ),
        f"audit leaf: {report_leaf_identity(str(proof.agency), verified.drawn_sha256)} in {proof.log_origin}",
    ]
    lines += [
        f"  {message.message_id} {message.message_type} {message.sender} -> {', '.join(message.recipients)}: "
        f"{len(message.statements)} evidence statements"
        for message in proof.messages
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    if args.extract:
        out = Path(args.extract)
        out.mkdir(parents=True, exist_ok=True)
        for name, data in embedded_files(pdf).items():
            target = out / Path(name).name  # never a path the PDF chose
            target.write_bytes(data)
            sys.stdout.write(f"extracted {target}\n")
    return 0


def add_commands(commands: Any) -> None:  # noqa: ANN401 - argparse's private subparsers action
    """Register `report verify` on the `rogatory` parser."""
    report = commands.add_parser("report", help="case reports (signed PDF)").add_subparsers(
        dest="report", required=True
    )
    verify = report.add_parser("verify", help="check a signed case report offline against the network CA")
    verify.add_argument("report", help="the signed PDF")
    verify.add_argument("--ca-file", required=True, help="the network CA's certificate (ca.pem)")
    verify.add_argument("--extract", metavar="DIR", help="write the embedded files (the proof) into DIR")
    verify.set_defaults(run=_cmd_verify)


__all__ = ["add_commands"]

"""The case report as a PDF: fpdf2, text shaped by HarfBuzz (uharfbuzz), one Noto font per script.

Each line is drawn in the font of its script (`runtime.reports.fonts.script_of`):
Arabic right to left and right-aligned, its letters joined in their
contextual forms; Bengali left to right with its conjuncts and vowel signs
placed by the shaper; everything else in Noto Sans. A character the line's
font lacks (a Latin parenthesis in an Arabic line) comes from the others,
Latin first. The proof (`protocol.reports.ReportProof`) and any other
files given (the bundle's manifest, its statements) are embedded as
associated files, so the PDF carries what it shows in machine-readable form.

`render_report` returns the PDF and where each line went (`PlacedLine`),
so a check can look at exactly the pixels of a line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from fpdf import FPDF
from fpdf.enums import Align, XPos, YPos

from protocol.reports import REPORT_PROOF_NAME, ReportProof
from runtime.reports.account import CaseReport, ReportEvent, ReportMessage
from runtime.reports.fonts import ReportFonts, Script, script_of

PRODUCER: Final = "Rogatory"
BODY_SIZE: Final = 10.0
SCRIPT_SIZE: Final = 12.0
"""Arabic and Bengali are drawn a little larger than Latin, as their fonts' proportions ask."""
LINE_HEIGHT: Final = 0.5
"""Millimetres of line per point of font size: room for Bengali's marks above and below."""
_SHAPING: Final[dict[Script, tuple[str, str, str]]] = {
    Script.LATIN: ("ltr", "latn", "en"),
    Script.ARABIC: ("rtl", "arab", "ar"),
    Script.BENGALI: ("ltr", "beng", "bn"),
}


@dataclass(frozen=True, slots=True)
class PlacedLine:
    """Where one drawn line of text sits: page (from 0) and its top and bottom, in millimetres from the top."""

    page: int
    top: float
    bottom: float
    text: str
    script: Script
    rows: int
    """How many rows the line took (1 unless it wrapped)."""


@dataclass(frozen=True, slots=True)
class RenderedReport:
    """The PDF (unsigned) and the place of every line drawn in it."""

    pdf: bytes
    lines: tuple[PlacedLine, ...]
    page_width: float
    page_height: float


def _timestamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


class _Report(FPDF):
    def __init__(self, report: CaseReport) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self._report = report

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("latin", size=8)
        self.set_text_shaping(use_shaping_engine=True, direction="ltr", script="latn", language="en")
        self.cell(
            0,
            5,
            f"Case {self._report.case_id} - drawn by {self._report.agency} - page {self.page_no()}/{{nb}} - "
            f"machine-readable proof attached: {REPORT_PROOF_NAME}",
            align=Align.C,
        )


class _Writer:
    def __init__(self, report: CaseReport, fonts: ReportFonts, *, shaping: bool) -> None:
        self.pdf = _Report(report)
        self.shaping = shaping
        self.lines: list[PlacedLine] = []
        pdf = self.pdf
        pdf.add_font("latin", fname=str(fonts.latin))
        pdf.add_font("latin", style="B", fname=str(fonts.latin_bold))
        pdf.add_font("arabic", fname=str(fonts.arabic))
        pdf.add_font("bengali", fname=str(fonts.bengali))
        pdf.set_fallback_fonts(["latin", "arabic", "bengali"])
        pdf.set_auto_page_break(auto=True, margin=18)
        pdf.set_margins(15, 15, 15)
        pdf.alias_nb_pages()

    def _script(self, script: Script) -> None:
        direction, tag, language = _SHAPING[script]
        if self.shaping and script != Script.LATIN:  # Latin needs no shaping, and fpdf2's line breaking shapes
            # every candidate width: unshaped Latin lines draw five times faster, the same letters.
            self.pdf.set_text_shaping(use_shaping_engine=True, direction=direction, script=tag, language=language)
        else:
            self.pdf.set_text_shaping(use_shaping_engine=False)

    def text(self, text: str, *, size: float | None = None, bold: bool = False, indent: float = 0.0) -> None:
        """One paragraph in the font of its script; Arabic right-aligned."""
        pdf = self.pdf
        script = script_of(text)
        font = "latin" if script == Script.LATIN else script.value
        pdf.set_font(font, style="B" if bold and script == Script.LATIN else "", size=size or _size(script))
        self._script(script)
        height = LINE_HEIGHT * pdf.font_size_pt
        if pdf.will_page_break(height):
            pdf.add_page()
        pdf.set_x(pdf.l_margin + indent)
        page, top = pdf.page - 1, pdf.get_y()
        rows = pdf.multi_cell(
            0,
            height,
            text,
            align=Align.R if script == Script.ARABIC else Align.L,
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
            output="LINES",
        )
        assert isinstance(rows, list)  # what output="LINES" returns
        bottom = pdf.get_y() if pdf.page - 1 == page else top + height * len(rows)
        self.lines.append(PlacedLine(page, top, bottom, text, script, len(rows)))

    def gap(self, height: float = 2.0) -> None:
        self.pdf.ln(height)


def _size(script: Script) -> float:
    return BODY_SIZE if script == Script.LATIN else SCRIPT_SIZE


def _event_line(event: ReportEvent) -> str:
    parts = [_timestamp(event.at), event.evidence_type, f"by {event.actor}", f"key {event.signer_key}"]
    if event.recipient:
        parts.append(f"for {event.recipient}")
    if event.checkpoint_size is not None:
        witnessed = f"; cosigned by {', '.join(event.witnesses)}" if event.witnesses else "; no cosignature yet"
        parts.append(f"in checkpoint {event.checkpoint_size}{witnessed}")
    if event.reason:
        parts.append(f"reason: {event.reason}")
    return " - ".join(parts)


def _message(writer: _Writer, number: int, message: ReportMessage) -> None:
    sequence = f"#{message.sequence}" if message.sequence is not None else f"{number}."
    writer.gap(1.5)
    writer.text(f"{sequence} {message.message_type}", size=11, bold=True)
    created = f", written {_timestamp(message.created_at)}" if message.created_at else ""
    writer.text(
        f"Message {message.message_id} from {message.sender} to {', '.join(message.recipients)}{created}", indent=4
    )
    for line in message.lines:
        writer.text(line, indent=4)
    for event in message.events:
        writer.text(_event_line(event), size=8.5, indent=8)


def render_report(
    report: CaseReport,
    fonts: ReportFonts,
    proof: ReportProof,
    attachments: Mapping[str, bytes] | None = None,
    *,
    shaping: bool = True,
) -> RenderedReport:
    """The report's PDF, unsigned, with `proof` (and `attachments`, by name) embedded as associated files.

    `shaping=False` draws the text unshaped (isolated Arabic letters, broken
    Bengali clusters): it exists only so the tests can prove their picture
    check sees the difference.
    """
    writer = _Writer(report, fonts, shaping=shaping)
    pdf = writer.pdf
    pdf.set_title(f"Case report {report.case_id}")
    pdf.set_author(report.agency)
    pdf.set_subject(f"The signed account of case {report.case_id}: its messages and each signed step")
    pdf.set_creator(PRODUCER)
    pdf.set_producer(PRODUCER)
    pdf.set_creation_date(report.drawn_at.astimezone(UTC))
    pdf.set_lang("en")
    pdf.add_page()
    writer.text(f"Case report {report.case_id}", size=16, bold=True)
    for line in report.title_lines:
        writer.text(line, size=_size(script_of(line)) + 2)
    writer.text(
        f"Drawn by {report.agency} at {_timestamp(report.drawn_at)} from the messages it holds; "
        f"{len(report.messages)} message(s); audit log {report.log_origin}; languages {', '.join(report.languages)}."
    )
    writer.text(
        "Every step below is a signed evidence statement in the gateway's audit log. The attached "
        f"{REPORT_PROOF_NAME} names each one (log identity and SHA-256 of its signed payload); the gateway "
        "signed this PDF after checking them against its log."
    )
    for number, message in enumerate(report.messages, start=1):
        _message(writer, number, message)
    pdf.embed_file(
        bytes=proof.canonical_bytes(),
        basename=REPORT_PROOF_NAME,
        modification_date=report.drawn_at.astimezone(UTC),
        mime_type="application/json",
        associated_file_relationship="Data",
        desc="The report's machine-readable proof: each message and the digest of each signed evidence statement",
    )
    for name, data in sorted((attachments or {}).items()):
        pdf.embed_file(
            bytes=data,
            basename=name,
            modification_date=report.drawn_at.astimezone(UTC),
            associated_file_relationship="Source",
            desc=f"Evidence bundle member {name}",
        )
    return RenderedReport(bytes(pdf.output()), tuple(writer.lines), pdf.w, pdf.h)


__all__ = ["PlacedLine", "RenderedReport", "render_report"]

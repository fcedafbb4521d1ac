"""The case report renders as a clerk reads it: Arabic joined right to left, Bengali with its conjuncts and vowel
signs, checked as a picture against HarfBuzz's shaping of the same string with the same font."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

from protocol.reports import REPORT_PROOF_NAME, ReportProof
from runtime.reports.errors import ReportErrorCode, ReportFontsMissing
from runtime.reports.fonts import ReportFonts, Script, find_fonts
from runtime.reports.pades import embedded_files, report_proof
from runtime.reports.render import RenderedReport, render_report
from tests.reports.conftest import sample_case_report
from tests.reports.picture import (
    covered,
    likeness,
    line_picture,
    rasterise,
    reference_picture,
    script_lines,
    shaping_matters,
    side_by_side,
)

SCRIPTS = (Script.ARABIC, Script.BENGALI)


def _compared(rendered: RenderedReport, fonts: ReportFonts, script: Script):
    """(line, drawn picture, likeness to the shaped reference, likeness to the unshaped one) of each checkable line."""
    pages = rasterise(rendered.pdf)
    font = fonts.for_script(script)
    found, seen = [], set()
    for placed in script_lines(rendered, script):
        if placed.text in seen or not covered(placed.text, font):
            continue
        seen.add(placed.text)
        drawn = line_picture(pages, placed)
        pixels = 12.0 * 3.0
        shaped = reference_picture(placed.text, font, script, pixels=pixels)
        unshaped = reference_picture(placed.text, font, script, pixels=pixels, shaped=False)
        found.append((placed, drawn, shaped, likeness(drawn, shaped), likeness(drawn, unshaped)))
    return found, pages


@pytest.fixture(scope="module")
def rendered(fonts) -> RenderedReport:
    report, proof = sample_case_report()
    return render_report(report, fonts, proof)


@pytest.mark.parametrize("script", SCRIPTS)
def test_arabic_and_bengali_lines_are_drawn_as_harfbuzz_shapes_them(rendered, fonts, artifacts, script):
    compared, pages = _compared(rendered, fonts, script)
    pages[0].save(artifacts / "report-page-1.png")
    assert len(compared) >= 3, f"too few {script} lines to check: {len(compared)}"
    sheet, telling = [], 0
    for placed, drawn, shaped, to_shaped, to_unshaped in compared:
        sheet += [drawn, shaped]
        print(f"{script}: {to_shaped} shaped, {to_unshaped} unshaped: {placed.text[:50]}")
        assert to_shaped.close(), f"{placed.text!r} is not drawn as HarfBuzz shapes it: {to_shaped}"
        if shaping_matters(placed.text, fonts.for_script(script), script):
            telling += 1
            assert to_shaped.correlation - to_unshaped.correlation >= 0.15, (
                f"the check cannot tell shaped from unshaped {script} here: {to_shaped} vs {to_unshaped}"
            )
    assert telling >= 2, f"only {telling} {script} lines whose shaping changes their glyphs"
    side_by_side(sheet[:12]).save(artifacts / f"lines-{script}-drawn-then-reference.png")


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_picture_check_refuses_a_report_drawn_without_shaping(fonts, artifacts, script):
    report, proof = sample_case_report()
    unshaped = render_report(report, fonts, proof, shaping=False)
    compared, _ = _compared(unshaped, fonts, script)
    assert compared
    side_by_side([picture for item in compared[:4] for picture in item[1:3]]).save(
        artifacts / f"lines-{script}-unshaped-refused.png"
    )
    assert not any(to_shaped.close() for _, _, _, to_shaped, _ in compared)


def test_the_picture_check_refuses_lines_whose_script_font_is_missing(fonts, artifacts):
    report, proof = sample_case_report()
    latin_only = dataclasses.replace(fonts, bengali=fonts.latin, arabic=fonts.latin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fpdf2 warns of every missing glyph: that is what this test draws
        boxes = render_report(report, latin_only, proof)
    pages = rasterise(boxes.pdf)
    failed = 0
    for script in SCRIPTS:
        for placed in script_lines(boxes, script)[:6]:
            drawn = line_picture(pages, placed)
            shaped = reference_picture(placed.text, fonts.for_script(script), script, pixels=36.0)
            failed += not likeness(drawn, shaped).close()
            checked = placed
    side_by_side([line_picture(pages, checked)]).save(artifacts / "lines-without-script-fonts-refused.png")
    assert failed == 12


def test_missing_fonts_are_refused_with_a_stable_code(tmp_path: Path):
    (tmp_path / "NotoSans-Regular.ttf").write_bytes(b"")
    with pytest.raises(ReportFontsMissing) as refused:
        find_fonts(tmp_path)
    assert refused.value.code == ReportErrorCode.REPORT_FONTS_MISSING
    assert "arabic" in refused.value.detail
    assert "bengali" in refused.value.detail
    assert "fonts-noto-core" in refused.value.detail


def test_the_report_lists_every_message_and_event_and_embeds_its_proof(rendered):
    report, proof = sample_case_report()
    texts = [line.text for line in rendered.lines]
    assert len(report.messages) == 15
    for message in report.messages:
        assert any(message.message_id in text for text in texts)
        assert sum(1 for text in texts if message.message_id in text) == 1
    events = [text for text in texts if " - key " in text]
    assert len(events) == sum(len(message.events) for message in report.messages)
    files = embedded_files(rendered.pdf)
    assert set(files) == {REPORT_PROOF_NAME}
    assert report_proof(rendered.pdf) == proof
    assert ReportProof.model_validate_json(files[REPORT_PROOF_NAME]) == proof
    assert b"/AF" in rendered.pdf  # an associated file of the document, not only an attachment

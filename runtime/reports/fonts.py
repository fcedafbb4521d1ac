"""The report's fonts: Debian's Noto (package `fonts-noto-core`), one font per script, found in one directory.

| script  | font file                                               | used for                         |
| ------- | ------------------------------------------------------- | -------------------------------- |
| Latin   | `NotoSans-Regular.ttf`, `NotoSans-Bold.ttf`             | English, identifiers, times      |
| Arabic  | `NotoNaskhArabic-Regular.ttf` (or `NotoSansArabic-…`)   | Arabic, right to left            |
| Bengali | `NotoSansBengali-Regular.ttf` (or `NotoSerifBengali-…`) | Bengali, conjuncts, vowel signs  |

`deploy/run` installs the package (both `demo` and `test`). Nothing is
downloaded at run time: a missing font is `ReportFontsMissing` (code
`REPORT_FONTS_MISSING`), naming the files looked for and the package to install.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from runtime.reports.errors import ReportFontsMissing

DEFAULT_FONT_DIR: Final = Path("/usr/share/fonts/truetype/noto")
"""Where Debian's `fonts-noto-core` puts its files."""
FONT_PACKAGE: Final = "fonts-noto-core"


class Script(StrEnum):
    """The scripts a report is drawn in (the languages of the cases: English, Arabic, Bengali)."""

    LATIN = "latin"
    ARABIC = "arabic"
    BENGALI = "bengali"


_CANDIDATES: Final[dict[str, tuple[str, ...]]] = {
    "latin": ("NotoSans-Regular.ttf",),
    "latin-bold": ("NotoSans-Bold.ttf",),
    "arabic": ("NotoNaskhArabic-Regular.ttf", "NotoSansArabic-Regular.ttf"),
    "bengali": ("NotoSansBengali-Regular.ttf", "NotoSerifBengali-Regular.ttf"),
}


@dataclass(frozen=True, slots=True)
class ReportFonts:
    """The font file for each script (and Latin bold, for headings)."""

    latin: Path
    latin_bold: Path
    arabic: Path
    bengali: Path

    def for_script(self, script: Script) -> Path:
        """The file that draws `script`."""
        return {Script.LATIN: self.latin, Script.ARABIC: self.arabic, Script.BENGALI: self.bengali}[script]


def find_fonts(directory: Path = DEFAULT_FONT_DIR) -> ReportFonts:
    """The report's fonts in `directory`, the first candidate of each that is a readable file.

    Raises `ReportFontsMissing` naming every role without a file: a report with
    boxes instead of letters is never drawn.
    """
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, names in _CANDIDATES.items():
        path = next((directory / name for name in names if (directory / name).is_file()), None)
        if path is None:
            missing.append(f"{role} ({' or '.join(names)})")
        else:
            found[role] = path
    if missing:
        raise ReportFontsMissing(
            f"no font for {', '.join(missing)} in {directory}: install Debian's {FONT_PACKAGE} "
            "(deploy/run does) or set ROGATORY_REPORT_FONT_DIR"
        )
    return ReportFonts(found["latin"], found["latin-bold"], found["arabic"], found["bengali"])


def script_of(text: str) -> Script:
    """The script a line is drawn in: Arabic or Bengali if it has any letter of theirs, else Latin."""
    for character in text:
        code = ord(character)
        if 0x0600 <= code <= 0x06FF or 0x0750 <= code <= 0x077F or 0xFB50 <= code <= 0xFEFF:
            return Script.ARABIC
        if 0x0980 <= code <= 0x09FF:
            return Script.BENGALI
    return Script.LATIN


__all__ = ["DEFAULT_FONT_DIR", "FONT_PACKAGE", "ReportFonts", "Script", "find_fonts", "script_of"]

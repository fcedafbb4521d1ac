"""The case report a clerk can open: a PDF of a case's account, in its languages, signed by the gateway (PAdES).

* `runtime.reports.account` — what a report shows (`CaseReport`, `ReportMessage`, `ReportEvent`);
* `runtime.reports.fonts` — the Noto fonts per script, `ReportFontsMissing` when one is not installed;
* `runtime.reports.render` — the PDF (fpdf2 + HarfBuzz shaping), the proof embedded as an associated file;
* `runtime.reports.pades` — signing (the gateway) and offline verification (anyone with the network CA).

Here, not in `protocol/`: it reads fonts and certificates. The proof the PDF
embeds is pure data, in `protocol.reports`.
"""

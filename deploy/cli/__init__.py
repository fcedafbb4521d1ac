"""The `rogatory` command line: the parser, and the commands that are not a benchmark.

`deploy.cli.commands` builds the parser and runs `dev up / down`, `demo`,
`audit verify / export` and `bench`; `deploy.cli.files` adds the attachment
commands (`send`, `inbox`, `fetch`, `bench-attachments`); `deploy.cli.demo`
is `rogatory demo`; `deploy.cli.auditor` fetches, exports and verifies the
gateway's audit log for `rogatory audit` (and the demo). The benchmarks'
own code is `deploy.bench`, loaded only when one runs.
"""

from deploy.cli.commands import build_parser, entry, main

__all__ = ["build_parser", "entry", "main"]

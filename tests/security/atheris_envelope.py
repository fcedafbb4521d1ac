"""Coverage-guided fuzzing of the envelope parser with atheris (libFuzzer for Python).

Run as `python -m tests.security.atheris_envelope [libFuzzer flags]`, e.g.
`-runs=200000` or `-max_total_time=600`; `tests/security/test_atheris.py`
runs it for a few thousand inputs in the default suite. The target parses a
frame, authenticates its header and opens it as LY-MLA-CA, starting from an
honest sealed message; any exception other than a `ProtocolError` (a
refusal with a stable code) is a crash that libFuzzer reports with the input
that caused it.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["protocol"]):
    from protocol.envelope import SealedMessage, authenticate_header, open_sealed
    from protocol.errors import ProtocolError

from tests.security.attacks import valid_document
from tests.support.network import LY, NOW, LocalNetwork

NET = LocalNetwork()
DIRECTORY = NET.directory()


def refuse_or_open(data: bytes) -> None:
    """The fuzz target: a refusal must be a `ProtocolError`, never anything else."""
    try:
        sealed = SealedMessage.from_bytes(data, NET.limits)
        authenticate_header(sealed, DIRECTORY, now=NOW)
        open_sealed(sealed, DIRECTORY, recipient=LY, recipient_keys=NET[LY].decryption_keys, now=NOW, limits=NET.limits)
    except ProtocolError:
        return


def main(argv: list[str]) -> None:
    """Seed a corpus with an honest message and fuzz until libFuzzer's flags say stop."""
    corpus = Path(tempfile.mkdtemp(prefix="rogatory-fuzz-"))
    (corpus / "honest").write_bytes(NET.seal(valid_document(uuid.uuid4())).to_bytes())  # type: ignore[arg-type]
    atheris.Setup([argv[0], *argv[1:], str(corpus)], refuse_or_open)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)

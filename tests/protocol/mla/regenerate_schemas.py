"""Write the JSON Schema files of `docs/schemas/`: `python -m tests.protocol.mla.regenerate_schemas`.

Run by hand when the models change; `test_mla_schemas.py` fails until it is.
It lives beside that test, not in `protocol/`, because `protocol/` does no
I/O: `protocol.mla.schemas.render_schemas` renders the bytes, this writes them.
"""

import sys
from pathlib import Path

from protocol.mla.schemas import render_schemas

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "docs" / "schemas"


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into `directory`, remove stale ones, return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    rendered = render_schemas()
    for stale in directory.glob("*.schema.json"):
        if stale.name not in rendered:
            stale.unlink()
    written = []
    for name, content in rendered.items():
        path = directory / name
        path.write_bytes(content)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        sys.stdout.write(f"{path}\n")

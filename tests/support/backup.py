"""A service's data directory backed up and restored, the way `rogatory backup` / `rogatory restore` do it.

Stand-in until those commands are on main (the lead swaps these two
functions for them): every SQLite database (`*.db`) is copied with SQLite's
online backup API, consistent while the service writes to it; every other
file beside them (keys, certificates, attachment bodies) is copied as is;
write-ahead logs are not (the backup of their database includes them).
`restore_data_dir` replaces the data directory with the backup's copy, as a
new disk holding the last backup would.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

_SKIPPED_SUFFIXES = ("-wal", "-shm", "-journal")


def backup_data_dir(data_dir: Path, out: Path) -> list[Path]:
    """Back `data_dir` up into the directory `out` (created); the databases copied."""
    databases = []
    for source in sorted(data_dir.rglob("*")):
        target = out / source.relative_to(data_dir)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if source.name.endswith(_SKIPPED_SUFFIXES) or not source.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix == ".db":
            with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as live, sqlite3.connect(target) as copy:
                live.backup(copy)
            live.close()
            copy.close()
            databases.append(target)
        else:
            shutil.copy2(source, target)
    out.chmod(0o700)
    return databases


def restore_data_dir(backup: Path, data_dir: Path) -> None:
    """Replace `data_dir` by the backup's copy: what was written since the backup is gone."""
    shutil.rmtree(data_dir)
    shutil.copytree(backup, data_dir)
    data_dir.chmod(0o700)


__all__ = ["backup_data_dir", "restore_data_dir"]

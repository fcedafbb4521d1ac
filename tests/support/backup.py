"""A service's data directory backed up and restored with `rogatory backup` / `rogatory restore`, as an operator
does it, and a database read back out of a backup archive (for the drills' figures)."""

from __future__ import annotations

import asyncio
import sys
import tarfile
from pathlib import Path

from deploy.cli.backup import DATA_PREFIX


async def _rogatory(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deploy", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, f"rogatory {' '.join(args)}: {err.decode()[-800:]}"
    return out.decode() + err.decode()


async def backup_data_dir(data_dir: Path, archive: Path) -> str:
    """`rogatory backup --data-dir DATA_DIR --out ARCHIVE`, online; what it said."""
    return await _rogatory("backup", "--data-dir", str(data_dir), "--out", str(archive))


async def restore_data_dir(archive: Path, data_dir: Path) -> str:
    """`rogatory restore ARCHIVE --data-dir DATA_DIR` onto a stopped service (a gateway's log starts held)."""
    return await _rogatory("restore", str(archive), "--data-dir", str(data_dir))


def database_in(archive: Path, name: str, into: Path) -> Path:
    """The database `name` (e.g. `gateway.db`) as the backup archive holds it, extracted under `into`."""
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, mode="r:") as tar:
        member = tar.extractfile(DATA_PREFIX + name)
        assert member is not None, f"{archive} holds no {name}"
        (into / name).write_bytes(member.read())
    return into / name


__all__ = ["backup_data_dir", "database_in", "restore_data_dir"]

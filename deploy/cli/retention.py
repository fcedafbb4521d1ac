"""`rogatory retention show` and `rogatory retention purge`: an agent's closed cases past their retention.

Run on the agent's machine, as its user, with its settings (the same
`ROGATORY_*` variables, or the options): `show` lists the cases `purge` would
purge now, and the trail of what was purged before; `purge` purges them now,
as the agent's periodic task does (`agents.retention`). Both need the
keystore: the case state is folded from the sealed documents. The agent may
keep running (SQLite serialises the writes).

Exit status: 0; 1 when the store or the keystore cannot be opened; 2 without
a policy (`--after-close-days` or `ROGATORY_RETENTION_AFTER_CLOSE_DAYS`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any, Final

from agents.attachments import AttachmentStore
from agents.cases import CaseBook
from agents.retention import Retention
from agents.store import AgentStore
from protocol.errors import ProtocolError
from protocol.ids import parse_agency_id
from protocol.keystore import unlock_keystore
from protocol.storage import STORAGE_KEY_NAME, StorageKey
from runtime.errors import ServiceError
from runtime.runner import utc_now

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


class _Unusable(Exception):
    """The agent's files cannot be used."""


def _setting(args: argparse.Namespace, name: str, variable: str) -> str | None:
    value = getattr(args, name)
    return str(value) if value is not None else os.environ.get(variable)


def _storage_key(keystore: Path, passphrase_file: Path) -> StorageKey:
    try:
        keys = unlock_keystore(keystore.read_bytes(), passphrase_file.read_bytes().strip())
    except (OSError, ProtocolError) as exc:
        raise _Unusable(f"cannot unlock the keystore {keystore}: {exc}") from exc
    if STORAGE_KEY_NAME not in keys:
        raise _Unusable(f"the keystore {keystore} holds no storage key: the agent adds one at its first start")
    return StorageKey(keys[STORAGE_KEY_NAME])


async def _run(args: argparse.Namespace, *, purge: bool) -> int:
    data_dir = _setting(args, "data_dir", "ROGATORY_DATA_DIR")
    keystore = _setting(args, "keystore_file", "ROGATORY_KEYSTORE_FILE")
    passphrase = _setting(args, "passphrase_file", "ROGATORY_KEYSTORE_PASSPHRASE_FILE")
    agency = _setting(args, "agency", "ROGATORY_AGENCY")
    days = _setting(args, "after_close_days", "ROGATORY_RETENTION_AFTER_CLOSE_DAYS")
    if not (data_dir and keystore and passphrase and agency):
        sys.stderr.write(
            "give --data-dir, --keystore-file, --passphrase-file and --agency (or the agent's ROGATORY_*)\n"
        )
        return EXIT_USAGE
    if days is None or not days.isdigit():
        sys.stderr.write(
            "no retention policy: --after-close-days N or ROGATORY_RETENTION_AFTER_CLOSE_DAYS (keep all)\n"
        )
        return EXIT_USAGE
    key = _storage_key(Path(keystore), Path(passphrase))
    store = await AgentStore.open(Path(data_dir) / "agent.db", storage_key=key)
    attachments = (
        await AttachmentStore.open(Path(data_dir), storage_key=key)
        if (Path(data_dir) / "attachments.db").exists()
        else None
    )
    try:
        retention = Retention(
            agency=parse_agency_id(agency),
            store=store,
            cases=CaseBook(parse_agency_id(agency)),
            attachments=attachments,
            after_close_days=int(days),
            clock=utc_now,
        )
        if purge:
            purged = await retention.purge()
            for record in purged:
                sys.stdout.write(
                    f"purged {record.direction} {record.message_id} ({record.message_type}) of case "
                    f"{record.case_id}, closed {record.case_closed_at}, at {record.purged_at}\n"
                )
            sys.stdout.write(f"{len(purged)} message(s) purged (retention {days} days after closure)\n")
            return 0
        due = await retention.due()
        for case in due:
            sys.stdout.write(f"case {case.case_id}: last message {case.closed_at}; would purge:\n")
            for message in case.messages:
                sys.stdout.write(f"  {message}\n")
        trail = await store.purges()
        sys.stdout.write(
            f"{len(due)} case(s) due (retention {days} days after closure); {len(trail)} message(s) purged before"
            + (f", the last at {trail[-1].purged_at}" if trail else "")
            + "\n"
        )
        return 0
    finally:
        if attachments is not None:
            await attachments.close()
        await store.close()


def _command(purge: bool) -> Any:  # noqa: ANN401 - an argparse handler
    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(_run(args, purge=purge))
        except (_Unusable, ServiceError, ProtocolError) as exc:
            sys.stderr.write(f"{exc}\n")
            return EXIT_FAILED

    return run


def add_retention_commands(commands: Any) -> None:  # noqa: ANN401 - argparse's private _SubParsersAction
    """Add `retention show` and `retention purge` to the `rogatory` parser's sub-commands."""
    retention = commands.add_parser(
        "retention", help="an agent's closed cases past their retention period"
    ).add_subparsers(dest="retention", required=True)
    for name, purge, text in (
        ("show", False, "list what would be purged now, and what was purged before"),
        ("purge", True, "purge now the content of closed cases past their retention"),
    ):
        command = retention.add_parser(name, help=text)
        command.add_argument("--data-dir", help="the agent's data directory (default: ROGATORY_DATA_DIR)")
        command.add_argument("--keystore-file", help="default: ROGATORY_KEYSTORE_FILE")
        command.add_argument("--passphrase-file", help="default: ROGATORY_KEYSTORE_PASSPHRASE_FILE")
        command.add_argument("--agency", help="default: ROGATORY_AGENCY")
        command.add_argument(
            "--after-close-days", type=int, help="the policy (default: ROGATORY_RETENTION_AFTER_CLOSE_DAYS)"
        )
        command.set_defaults(run=_command(purge))


__all__ = ["add_retention_commands"]

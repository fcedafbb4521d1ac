"""`rogatory log-recovery`: the operator's hands on the gateway's audit log after a lost disk.

    rogatory log-recovery hold --data-dir DIR [--database-url URL]
    rogatory log-recovery excuse AGENCY... --data-dir DIR [--database-url URL]
    rogatory log-recovery status --data-dir DIR [--database-url URL]

Run on the gateway's store while the gateway is stopped, right after its
data were restored from a backup (`rogatory restore`) and before it starts:

* `hold` marks the store as restored: the gateway starts with its log held
  (`gateway.recovery`): nothing appended, no checkpoint signed, until every
  witness of the directory presented its latest witnessed checkpoint and the
  log is back to the largest of them.
* `excuse` counts witnesses as heard that will not present (an agency that is
  offline for long): the operator accepts that a checkpoint only they hold may
  be larger, and that they would then see a fork.
* `status` prints what the store holds of the recovery (JSON).

The running gateway says the same at `GET /v1/audit/recovery`, in `/healthz`
(`log_recovery`) and in `rogatory_gateway_log_recovering`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from gateway.recovery import FLOOR_SETTING, HEARD_SETTING, HOLD_SETTING, RECOVERED_SETTING, hold_value
from gateway.store import GatewayStore

EXIT_OK: Final = 0


async def _open(args: argparse.Namespace) -> GatewayStore:
    if args.database_url:
        return await GatewayStore.open_postgres(args.database_url)
    return await GatewayStore.open(Path(args.data_dir) / "gateway.db")


async def _size(store: GatewayStore) -> int:
    return await store.tree_size()


async def hold_log(data_dir: Path, database_url: str | None) -> int:
    """Mark the gateway store of `data_dir` (or `database_url`) as restored: its log is held at start; its size."""
    store = (
        await GatewayStore.open_postgres(database_url)
        if database_url
        else await GatewayStore.open(data_dir / "gateway.db")
    )
    try:
        size = await _size(store)
        async with store.transaction() as tx:
            await tx.set_setting(HOLD_SETTING, hold_value(size, datetime.now(UTC)))
            await tx.set_setting(HEARD_SETTING, json.dumps([]))
        return size
    finally:
        await store.close()


async def _hold(args: argparse.Namespace) -> dict[str, Any]:
    size = await hold_log(Path(args.data_dir), args.database_url)
    return {"held": True, "restored_size": size}


async def _excuse(args: argparse.Namespace) -> dict[str, Any]:
    store = await _open(args)
    try:
        heard = set(json.loads(await store.setting(HEARD_SETTING) or "[]")) | set(args.agencies)
        async with store.transaction() as tx:
            await tx.set_setting(HEARD_SETTING, json.dumps(sorted(heard)))
        return {"heard": sorted(heard)}
    finally:
        await store.close()


async def _status(args: argparse.Namespace) -> dict[str, Any]:
    store = await _open(args)
    try:
        hold, floor = await store.setting(HOLD_SETTING), await store.setting(FLOOR_SETTING)
        recovered = await store.setting(RECOVERED_SETTING)
        return {
            "tree_size": await _size(store),
            "hold": None if hold is None else json.loads(hold),
            "witnessed_checkpoint": floor,
            "witnesses_heard": json.loads(await store.setting(HEARD_SETTING) or "[]"),
            "recovered": None if recovered is None else json.loads(recovered),
        }
    finally:
        await store.close()


def _runner(command: Any) -> Any:  # noqa: ANN401 - an argparse `run` callable
    def run(args: argparse.Namespace) -> int:
        sys.stdout.write(json.dumps(asyncio.run(command(args)), indent=2) + "\n")
        return EXIT_OK

    return run


def add_recovery_commands(commands: Any) -> None:  # noqa: ANN401 - argparse's private _SubParsersAction
    """Add `log-recovery hold | excuse | status` to the `rogatory` parser's sub-commands."""
    recovery = commands.add_parser(
        "log-recovery", help="the gateway's audit log after a lost disk (held until back to the witnessed size)"
    ).add_subparsers(dest="log_recovery", required=True)

    def store_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data-dir", required=True, help="the gateway's data directory (gateway.db)")
        parser.add_argument("--database-url", help="the gateway's PostgreSQL database instead of gateway.db")

    hold = recovery.add_parser("hold", help="mark a restored store: the gateway starts with its log held")
    store_options(hold)
    hold.set_defaults(run=_runner(_hold))
    excuse = recovery.add_parser("excuse", help="count witnesses as heard that will not present their checkpoint")
    excuse.add_argument("agencies", nargs="+", help="agency ids")
    store_options(excuse)
    excuse.set_defaults(run=_runner(_excuse))
    status = recovery.add_parser("status", help="what the store holds of the log's recovery (JSON)")
    store_options(status)
    status.set_defaults(run=_runner(_status))


__all__ = [
    "add_recovery_commands",
    "hold_log",
]

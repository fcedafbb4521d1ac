"""`rogatory ping --to AGENCY`: check the link to another agency, through the whole path, outside any case.

It asks this agency's agent for a connectivity test (`POST /v1/connectivity-tests`),
then follows it (`GET /v1/connectivity-tests/{id}`) until the pong is back, the
ping was refused on the way, or the deadline passed. It prints the state, the
timings and the evidence of each leg (or, with `--json`, the agent's answer), and
exits 0 only when the pong came back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Final

import aiohttp

from deploy.client.agent_api import AgentApiError, AgentClient

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
POLL_S: Final = 0.5
SLACK_S: Final = 5.0
"""How long past the test's deadline the command keeps asking (the agent decides `timed_out` by its clock)."""


class PingUsageError(Exception):
    """The command cannot tell which agent to ask."""


def _agent_of(args: argparse.Namespace) -> tuple[str, str]:
    """(URL, token) of `--agent`/`--token` (or `ROGATORY_AGENT_TOKEN`), or of `--state-dir`/`--agency`."""
    if args.state_dir:
        from deploy.localnet.devstack import read_stack  # noqa: PLC0415 - only for dev networks

        stack = read_stack(Path(args.state_dir))
        if stack is None or args.agency not in stack.get("agents", {}):
            raise PingUsageError(f"no agent {args.agency} in {args.state_dir}/stack.json")
        entry = stack["agents"][args.agency]
        return str(entry["url"]), str(entry["token"])
    token = args.token or os.environ.get("ROGATORY_AGENT_TOKEN")
    if not args.agent or not token:
        raise PingUsageError("give --agent URL and --token (or ROGATORY_AGENT_TOKEN), or --state-dir and --agency")
    return str(args.agent), str(token)


async def run_ping(client: AgentClient, to: str, *, timeout_s: int | None, wait: bool) -> dict[str, Any]:
    """Start a connectivity test and, with `wait`, follow it until it is no longer `pending`."""
    test = await client.start_connectivity_test(to, timeout_s=timeout_s)
    if not wait:
        return test
    started = time.monotonic()
    limit = (timeout_s or 120) + SLACK_S
    while test["state"] == "pending" and time.monotonic() - started < limit:
        await asyncio.sleep(POLL_S)
        test = await client.connectivity_test(test["test_id"])
    return test


def describe(test: dict[str, Any]) -> list[str]:
    """The test in a few lines: state, timings, each leg's evidence."""
    timings = test["timings"]
    lines = [f"connectivity test {test['test_id']} to {test['to']}: {test['state']}"]
    if test["failure"] is not None:
        lines.append(f"  failure: {test['failure']['code']} {test['failure'].get('detail') or ''}".rstrip())
    for name, value in timings.items():
        if value is not None:
            lines.append(f"  {name}: {value} ms")
    ping = test["ping"]
    signed = ", ".join(f"{item['type']} by {item['signed_by']}" for item in ping["evidence"]) or "none yet"
    lines.append(f"  ping {ping['message_id']}: {ping['status']}; evidence: {signed}")
    pong = test["pong"]
    if pong is not None:
        taken = ", ".join(item["statement"]["evidence_type"] for item in pong["evidence"] if "statement" in item)
        lines.append(f"  pong {pong['message_id']}: received {pong['received_at']}; signed here: {taken or '-'}")
    return lines


def _cmd_ping(args: argparse.Namespace) -> int:
    try:
        url, token = _agent_of(args)
    except PingUsageError as exc:
        sys.stderr.write(f"rogatory ping: {exc}\n")
        return EXIT_USAGE

    async def go() -> dict[str, Any]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            return await run_ping(
                AgentClient(session, url, token), args.to, timeout_s=args.timeout, wait=not args.no_wait
            )

    try:
        test = asyncio.run(go())
    except AgentApiError as exc:
        sys.stderr.write(f"rogatory ping: refused: {exc}\n")
        return EXIT_FAILED
    except aiohttp.ClientError as exc:
        sys.stderr.write(f"rogatory ping: cannot reach the agent at {url}: {exc}\n")
        return EXIT_FAILED
    sys.stdout.write(
        (json.dumps(test, indent=2, ensure_ascii=False) if args.json else "\n".join(describe(test))) + "\n"
    )
    if args.no_wait:
        return 0
    return 0 if test["state"] == "completed" else EXIT_FAILED


def add_ping_commands(commands: Any) -> None:  # noqa: ANN401 - argparse's private subparsers action
    """Register `ping` on the `rogatory` parser."""
    ping = commands.add_parser("ping", help="check the link to another agency: a ping and its pong, with evidence")
    ping.add_argument("--to", required=True, help="the agency to ping (its id in the directory)")
    ping.add_argument("--timeout", type=int, help="seconds before the test times out (5-3600, agent default 120)")
    ping.add_argument("--no-wait", action="store_true", help="start the test, print it, do not follow it")
    ping.add_argument("--json", action="store_true", help="print the agent's answer as JSON")
    ping.add_argument("--agent", help="the agent's URL")
    ping.add_argument("--token", help="an API token with the submit and read scopes (or ROGATORY_AGENT_TOKEN)")
    ping.add_argument("--state-dir", help="a dev network's state directory: URL and token from its stack.json")
    ping.add_argument("--agency", default="BD-MOHA-PSD", help="with --state-dir: which agency's agent")
    ping.set_defaults(run=_cmd_ping)


__all__ = ["add_ping_commands", "describe", "run_ping"]

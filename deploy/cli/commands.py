"""`rogatory`: the one command line of the project (docs/API.md, "Command line").

    rogatory dev up --state-dir DIR [--detach] [--host AGENCY,AGENCY...]...
    rogatory dev down --state-dir DIR
    rogatory demo [--state-dir DIR] [--keep]
    rogatory audit verify (--gateway URL | --export PATH) [--token T] [--authority-key K | --state-dir DIR]
                          [--ca-file PEM]
    rogatory audit export --gateway URL --out PATH [--token T] [--ca-file PEM]
    rogatory bench [--messages N] [--pairs P] [--agencies-per-process K] [--gateways N] [--database-url URL]
                   [--no-large] [--no-requests] [--soak-messages N] [--state-dir DIR] [--json PATH]
                   [--profile-dir DIR]
    rogatory send DOCUMENT.json [--attach FILE]... (--agent URL --token T | --state-dir DIR --agency ID)
    rogatory inbox (--agent URL --token T | --state-dir DIR --agency ID)
    rogatory fetch MESSAGE_ID [ATTACHMENT_ID] --out PATH (--agent URL --token T | --state-dir DIR --agency ID)
    rogatory bench-attachments [--mib N] [--state-dir DIR] [--json PATH]
    rogatory config-reference [--out PATH]
    rogatory tls (ca | server-cert | client-cert) ... (deploy.cli.tls)
    rogatory ping --to AGENCY [--timeout S] [--no-wait] [--json] (--agent URL --token T | --state-dir DIR --agency ID)
    rogatory backup --data-dir DIR --out FILE [--database-url URL] [--include-keystore] (deploy.cli.backup)
    rogatory restore FILE --data-dir DIR [--database-url URL]

The broker is the one at `ROGATORY_SYSTEM_AMQP_URL` (default amqp://guest:guest@127.0.0.1:5672/),
its management API at `ROGATORY_SYSTEM_MANAGEMENT_URL` (default: same host, port 15672).
Commands that call the gateway take the token from `--token` or `ROGATORY_TOKEN`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from deploy.cli.auditor import (
    EXIT_EXPORT_UNREADABLE,
    EXIT_GATEWAY_UNREADABLE,
    AuditSourceError,
    default_state_file,
    describe,
    exit_status,
    fetch_snapshot,
    read_export,
    verify_snapshot,
    write_export,
)
from deploy.cli.backup import add_backup_commands
from deploy.cli.credentials import add_commands as add_credential_commands
from deploy.cli.db import add_db_commands
from deploy.cli.evidence import add_evidence_commands
from deploy.cli.files import add_commands as add_attachment_commands
from deploy.cli.ping import add_ping_commands
from deploy.cli.recovery import add_recovery_commands
from deploy.cli.reports import add_commands as add_report_commands
from deploy.cli.retention import add_retention_commands
from deploy.cli.tls import add_commands as add_tls_commands
from deploy.configuration import RenamedVariable, system_amqp_url, system_management_url, write_reference
from deploy.localnet.devstack import DevStackError, down, gateway_ca, read_stack, up
from deploy.provision.broker import BrokerAdminError
from deploy.site import add_commands as add_site_commands

EXIT_USAGE = 2
EXIT_FAILED = 1


def _amqp_url() -> str:
    return system_amqp_url(os.environ)


def _management_url() -> str | None:
    return system_management_url(os.environ)


def _fail(message: str, status: int = EXIT_FAILED) -> int:
    print(f"rogatory: {message}", file=sys.stderr)
    return status


def _cmd_dev_up(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    try:
        hosts = [tuple(part.strip() for part in group.split(",") if part.strip()) for group in args.host or ()]
        stack = asyncio.run(up(state_dir, amqp_url=_amqp_url(), management_url=_management_url(), hosts=hosts))
    except (DevStackError, BrokerAdminError, OSError) as exc:
        return _fail(str(exc))
    print(f"gateway  {stack['gateway']['url']}")
    for agency, entry in stack["agents"].items():
        print(f"{agency:<18} {entry['url']}")
    if args.detach:
        print(f"running in the background; stop with: rogatory dev down --state-dir {state_dir}")
        return 0
    print("running; press Ctrl-C to stop")
    stop = asyncio.Event()

    async def wait() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()

    asyncio.run(wait())
    down(state_dir)
    return 0


def _cmd_dev_down(args: argparse.Namespace) -> int:
    try:
        down(Path(args.state_dir))
    except DevStackError as exc:
        return _fail(str(exc))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from deploy.cli.demo import run_demo  # noqa: PLC0415 - keeps `rogatory --help` fast

    return run_demo(
        amqp_url=_amqp_url(),
        management_url=_management_url(),
        state_dir=Path(args.state_dir) if args.state_dir else None,
        keep=args.keep,
    )


def _audit_credentials(args: argparse.Namespace) -> tuple[str | None, str | None]:
    token = args.token or os.environ.get("ROGATORY_TOKEN")
    authority = getattr(args, "authority_key", None) or os.environ.get("ROGATORY_AUTHORITY_KEY")
    if args.state_dir:
        stack = read_stack(Path(args.state_dir))
        if stack is None:
            return token, authority
        token = token or stack["gateway"]["auditor_token"]
        authority = authority or stack["network"]["authority_key"]
    return token, authority


def _gateway_ca(args: argparse.Namespace) -> Path | None:
    """`--ca-file`, else the dev network's CA when `--state-dir` names one; None: the system's store."""
    if args.ca_file:
        return Path(args.ca_file)
    stack = read_stack(Path(args.state_dir)) if args.state_dir else None
    return None if stack is None else gateway_ca(stack)


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    token, authority = _audit_credentials(args)
    if not authority:
        return _fail(
            "the directory authority's public key is needed: --authority-key, ROGATORY_AUTHORITY_KEY or --state-dir",
            EXIT_USAGE,
        )
    try:
        if args.export:
            snapshot = read_export(Path(args.export))
        else:
            if not token:
                return _fail("a token is needed: --token, ROGATORY_TOKEN or --state-dir", EXIT_USAGE)
            snapshot = asyncio.run(fetch_snapshot(args.gateway, token, ca_file=_gateway_ca(args)))
    except AuditSourceError as exc:
        return _fail(str(exc), EXIT_EXPORT_UNREADABLE if args.export else EXIT_GATEWAY_UNREADABLE)
    state_file = None if args.no_state else Path(args.state_file) if args.state_file else default_state_file()
    try:
        report = verify_snapshot(snapshot, authority, state_file=state_file)
    except AuditSourceError as exc:
        return _fail(str(exc), EXIT_EXPORT_UNREADABLE)
    for line in describe(report):
        print(line)
    return exit_status(report)


def _cmd_audit_export(args: argparse.Namespace) -> int:
    token, _ = _audit_credentials(args)
    if not token:
        return _fail("a token is needed: --token, ROGATORY_TOKEN or --state-dir", EXIT_USAGE)
    try:
        snapshot = asyncio.run(fetch_snapshot(args.gateway, token, ca_file=_gateway_ca(args)))
    except AuditSourceError as exc:
        return _fail(str(exc), EXIT_GATEWAY_UNREADABLE)
    write_export(snapshot, Path(args.out))
    print(f"wrote {len(snapshot.entries)} entries and {len(snapshot.checkpoints)} checkpoints to {args.out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from deploy.bench.run import BenchOptions, run_bench  # noqa: PLC0415 - keeps `rogatory --help` fast

    return run_bench(
        amqp_url=_amqp_url(),
        management_url=_management_url(),
        messages=args.messages,
        state_dir=Path(args.state_dir) if args.state_dir else None,
        json_out=Path(args.json) if args.json else None,
        options=BenchOptions(
            messages=args.messages,
            pairs=args.pairs,
            large=not args.no_large,
            soak_messages=args.soak_messages,
            requests=not args.no_requests,
            gateways=args.gateways,
            database_url=args.database_url,
            profile_dir=Path(args.profile_dir) if args.profile_dir else None,
            agencies_per_process=args.agencies_per_process,
        ),
    )


def _cmd_config_reference(args: argparse.Namespace) -> int:
    write_reference(Path(args.out) if args.out else None)
    return 0


def _add_bench_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`rogatory bench`: the whole path measured beside the raw broker."""
    bench = commands.add_parser("bench", help="measure the whole path against the raw broker")
    bench.add_argument("--messages", type=int, default=500, help="messages in each scenario")
    bench.add_argument(
        "--pairs", type=int, default=10, help="pairs of agencies of the many-agencies scenario (0: skip it)"
    )
    bench.add_argument(
        "--agencies-per-process",
        type=int,
        default=0,
        help="run the many-agencies scenario's agencies K to an agent process (agents.hosting; 0: one process each)",
    )
    bench.add_argument("--no-large", action="store_true", help="skip the 64 KB scenario")
    bench.add_argument("--no-requests", action="store_true", help="skip the sample MLA requests scenario")
    bench.add_argument(
        "--soak-messages", type=int, default=0, help="add a long run sampling resident memory (e.g. 100000)"
    )
    bench.add_argument(
        "--gateways", type=int, choices=(1, 2, 3), default=1, help="gateway processes (2, 3: on one PostgreSQL log)"
    )
    bench.add_argument(
        "--database-url",
        help="the gateway's PostgreSQL database (default: SQLite for 1 gateway, a throwaway local database for more)",
    )
    bench.add_argument("--state-dir")
    bench.add_argument(
        "--profile-dir",
        help="profile every service process (cProfile, slower) and write <service>-<pid>.prof files here",
    )
    bench.add_argument("--json", help="write the figures to this file (default: bench.json in the state dir)")
    bench.set_defaults(run=_cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `rogatory`."""
    parser = argparse.ArgumentParser(
        prog="rogatory",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="a local network of real processes").add_subparsers(dest="dev", required=True)
    dev_up = dev.add_parser("up", help="create or restart a local network and write DIR/stack.json")
    dev_up.add_argument("--state-dir", required=True)
    dev_up.add_argument("--detach", action="store_true", help="return once ready, leaving it running")
    dev_up.add_argument(
        "--host",
        action="append",
        metavar="AGENCY,AGENCY...",
        help="a new network runs these agencies in one agent process (agents.hosting); repeat for several hosts",
    )
    dev_up.set_defaults(run=_cmd_dev_up)
    dev_down = dev.add_parser("down", help="stop what `up` started; keep the data")
    dev_down.add_argument("--state-dir", required=True)
    dev_down.set_defaults(run=_cmd_dev_down)

    demo = commands.add_parser("demo", help="run a whole MLA exchange between Bangladesh and Libya")
    demo.add_argument("--state-dir", help="where to create the network (default: a temporary directory)")
    demo.add_argument("--keep", action="store_true", help="leave the network running at the end")
    demo.set_defaults(run=_cmd_demo)

    audit = commands.add_parser("audit", help="verify or export the gateway's audit log").add_subparsers(
        dest="audit", required=True
    )
    verify = audit.add_parser("verify", help="exit 0 only when the log is consistent and complete")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--gateway", help="the gateway's URL")
    source.add_argument("--export", help="an export written by `rogatory audit export`")
    verify.add_argument("--token", help="auditor token (default: ROGATORY_TOKEN)")
    verify.add_argument("--authority-key", help="base64 public key of the directory authority you trust")
    verify.add_argument("--state-dir", help="a dev network's state directory: token, authority key and CA from it")
    verify.add_argument("--ca-file", help="the CA an https:// gateway is verified with (default: the system's)")
    verify.add_argument(
        "--state-file",
        help="where the last verified state is kept (default: $XDG_STATE_HOME/rogatory/audit-state.json)",
    )
    verify.add_argument("--no-state", action="store_true", help="neither read nor update the remembered state")
    verify.set_defaults(run=_cmd_audit_verify)
    export = audit.add_parser("export", help="write the log to a file for offline verification")
    export.add_argument("--gateway", required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--token")
    export.add_argument("--state-dir")
    export.add_argument("--ca-file", help="the CA an https:// gateway is verified with (default: the system's)")
    export.set_defaults(run=_cmd_audit_export)

    _add_bench_command(commands)
    add_attachment_commands(commands)  # send --attach, inbox, fetch, bench-attachments (deploy.cli.files)
    add_site_commands(commands)  # authority, agency, gateway init, broker provision (deploy.site)
    add_credential_commands(commands)  # accounts add / revoke / list, tokens create / revoke (deploy.cli.credentials)
    add_tls_commands(commands)  # tls ca, server-cert, client-cert (deploy.cli.tls)
    add_ping_commands(commands)  # ping --to AGENCY: a connectivity test (deploy.cli.ping)
    add_db_commands(commands)  # db status, db migrate (deploy.cli.db)
    add_retention_commands(commands)  # retention show, retention purge (deploy.cli.retention)
    add_evidence_commands(commands)  # evidence export / verify (deploy.cli.evidence)
    add_report_commands(commands)  # report verify (deploy.cli.reports)
    add_recovery_commands(commands)  # log-recovery hold / excuse / status (deploy.cli.recovery)
    add_backup_commands(commands)  # backup, restore (deploy.cli.backup)

    reference = commands.add_parser("config-reference", help="write the environment variables' reference (Markdown)")
    reference.add_argument("--out", help="the file to write, e.g. docs/CONFIGURATION.md (default: standard output)")
    reference.set_defaults(run=_cmd_config_reference)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rogatory` console script."""
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


def entry() -> None:
    """Console-script wrapper that exits with `main`'s status."""
    try:
        sys.exit(main())
    except RenamedVariable as exc:
        sys.exit(_fail(str(exc)))


__all__ = ["build_parser", "entry", "main"]

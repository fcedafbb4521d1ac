"""`rogatory broker provision`: the broker of the hub, from a signed directory only.

The directory is verified first (against the authority key the operator
gives, never one read from the directory). The plan follows from it: one
vhost, the gateway's user, and a user `<prefix><AGENCY>` for each agency
that is listed and holds an unrevoked signing key; `deploy.provision.broker.provision`
then makes (idempotently) the topology, the queue limits (an operator policy:
`--max-queue-bytes`, default `DEFAULT_MAX_QUEUE_BYTES`), the users and their
permissions.

Broker credentials, `--auth`:

* `password` (the default): a password per user, generated on the first run
  and kept in `--secrets DIR/<user>.password` (0600); later runs reuse it. Each
  agency's file is a secret handed to that agency by a secure channel (it is
  not public material), the gateway's stays at the hub.
* `external`: users authenticate with client certificates (RabbitMQ's
  EXTERNAL mechanism, the certificate's common name = the user;
  `deploy.provision.tls` issues them). Each user still gets a random password
  that is written nowhere, so no password login is possible.

An agency that a newer directory no longer lists (or whose signing keys are
all revoked: suspended) loses its access on the next run: its user is
deleted and its open connections closed (`deploy.provision.broker.close_connections_of`).
Its inbox queue stays, the record of what was not delivered.

The node's own settings are not the management API's: `max_message_size`
(`protocol.topology.BROKER_MAX_MESSAGE_BYTES`) is written into `rabbitmq.conf`
with `--rabbitmq-conf` when the command runs on the broker's host
(`deploy.provision.broker_limits`), as the TLS listener is by `deploy.provision.tls`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import secrets
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from deploy.provision.broker import (
    DEFAULT_MAX_QUEUE_BYTES,
    REVOCATION_REASON,
    BrokerAdminError,
    ManagementClient,
    NetworkPlan,
    close_connections_of,
    provision,
)
from deploy.provision.broker_limits import rabbitmq_conf_block
from deploy.provision.tls import update_rabbitmq_conf
from deploy.site.secrets import SiteError, write_secret
from protocol.directory import NOTHING_HELD, Directory, verify_directory
from protocol.encoding import b64decode
from protocol.errors import ProtocolError
from protocol.ids import AgencyId
from protocol.keys import SigningPublicKey
from protocol.limits import DEFAULT_LIMITS
from protocol.signing import SignedStatement

ADMIN_PASSWORD_VARIABLE: Final = "ROGATORY_BROKER_ADMIN_PASSWORD"  # noqa: S105 - a variable's name
PASSWORD_BYTES: Final = 24
"""Random bytes of a generated broker password (32 characters of base64url)."""


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    """What one run did."""

    plan: NetworkPlan
    revoked: tuple[str, ...]
    password_files: tuple[Path, ...]


def read_verified_directory(path: Path, authority_key: str, *, now: datetime) -> Directory:
    """The directory at `path`, verified against the authority key given (base64 Ed25519)."""
    try:
        authority = SigningPublicKey(b64decode(authority_key))
        signed = SignedStatement.from_json(path.read_bytes())
        return verify_directory(signed, authority, now=now, held_version=NOTHING_HELD, limits=DEFAULT_LIMITS)
    except OSError as exc:
        raise SiteError(f"cannot read the directory {path}: {exc.strerror}") from exc
    except ProtocolError as exc:
        raise SiteError(f"directory {path} refused: {exc}") from exc


def active_agencies(directory: Directory, *, now: datetime) -> tuple[AgencyId, ...]:
    """Agencies listed with at least one signing key not revoked at `now`: the ones that keep broker access."""
    return tuple(
        entry.agency_id
        for entry in directory.agencies
        if any(key.revoked_at is None or key.revoked_at > now for key in entry.signing_keys)
    )


def plan_for(
    directory: Directory,
    *,
    vhost: str,
    user_prefix: str,
    gateway_user: str,
    now: datetime,
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
) -> NetworkPlan:
    """The broker plan of `directory`'s active agencies."""
    return NetworkPlan(
        vhost=vhost,
        gateway_user=gateway_user,
        agency_users={agency: f"{user_prefix}{agency}" for agency in active_agencies(directory, now=now)},
        max_queue_bytes=max_queue_bytes,
    )


def _passwords(plan: NetworkPlan, secrets_dir: Path | None) -> tuple[dict[str, str], list[Path]]:
    """Each user's password: the one kept in `secrets_dir`, else a new one written there (None: never written)."""
    passwords: dict[str, str] = {}
    written: list[Path] = []
    for user in plan.users:
        if secrets_dir is None:
            passwords[user] = secrets.token_urlsafe(PASSWORD_BYTES)
            continue
        path = secrets_dir / f"{user}.password"
        if path.exists():
            passwords[user] = path.read_text(encoding="utf-8").strip()
        else:
            passwords[user] = secrets.token_urlsafe(PASSWORD_BYTES)
            write_secret(path, passwords[user].encode("utf-8"))
        written.append(path)
    return passwords, written


async def _users_of_vhost(admin: ManagementClient, vhost: str) -> list[str]:
    answer = await admin.get_json(("vhosts", vhost, "permissions"), action=f"list permissions of vhost {vhost!r}")
    if not isinstance(answer, list):
        return []
    return [str(item["user"]) for item in answer if isinstance(item, dict) and "user" in item]


async def provision_from_directory(
    admin: ManagementClient,
    plan: NetworkPlan,
    *,
    user_prefix: str,
    secrets_dir: Path | None,
) -> ProvisionResult:
    """Provision `plan`, then cut off every `<prefix>` user of the vhost that the plan no longer has."""
    passwords, written = _passwords(plan, secrets_dir)
    await provision(admin, plan, passwords)
    keep = {*plan.users, admin.username}
    revoked = []
    for user in await _users_of_vhost(admin, plan.vhost):
        if user.startswith(user_prefix) and user not in keep:
            # User first, so no new connection opens while the old ones close (as revoke_agency does).
            await admin.delete(("users", user), action=f"delete broker user {user!r}", missing_ok=True)
            await close_connections_of(admin, user, reason=REVOCATION_REASON)
            revoked.append(user)
    for user in revoked:
        if secrets_dir is not None:
            (secrets_dir / f"{user}.password").unlink(missing_ok=True)
    return ProvisionResult(plan=plan, revoked=tuple(revoked), password_files=tuple(written))


def _admin_password(path: str | None) -> str:
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SiteError(f"cannot read the administrator's password file {path}: {exc.strerror}") from exc
    if os.environ.get(ADMIN_PASSWORD_VARIABLE):
        return os.environ[ADMIN_PASSWORD_VARIABLE]
    try:
        return getpass.getpass("password of the broker administrator: ")
    except EOFError as exc:
        raise SiteError(f"no administrator password: --admin-password-file or {ADMIN_PASSWORD_VARIABLE}") from exc


def _run(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    if args.auth == "password" and not args.secrets:
        print("rogatory: --secrets DIR is needed with --auth password: the passwords are kept there", file=sys.stderr)
        return 2
    try:
        directory = read_verified_directory(Path(args.directory), args.authority_key, now=now)
        vhost = args.vhost or directory.network
        prefix = args.user_prefix if args.user_prefix is not None else f"{directory.network}."
        plan = plan_for(
            directory,
            vhost=vhost,
            user_prefix=prefix,
            gateway_user=args.gateway_user or f"{prefix}gateway",
            now=now,
            max_queue_bytes=args.max_queue_bytes,
        )
        admin_password = _admin_password(args.admin_password_file)
        secrets_dir = Path(args.secrets) if args.auth == "password" else None

        async def run() -> ProvisionResult:
            async with ManagementClient(args.management_url, args.admin, admin_password) as admin:
                return await provision_from_directory(admin, plan, user_prefix=prefix, secrets_dir=secrets_dir)

        result = asyncio.run(run())
        if args.rabbitmq_conf:
            update_rabbitmq_conf(Path(args.rabbitmq_conf), rabbitmq_conf_block())
    except (SiteError, BrokerAdminError, OSError) as exc:  # PlanInvalid (a bad --max-queue-bytes) included
        print(f"rogatory: {exc}", file=sys.stderr)
        return 1
    print(f"vhost {plan.vhost}: directory version {directory.version}, {len(plan.agency_users)} agencies")
    print(f"gateway user {plan.gateway_user}; agency users: {', '.join(plan.agency_users.values()) or 'none'}")
    for user in result.revoked:
        print(f"revoked {user}: user deleted, connections closed")
    if secrets_dir is not None:
        print(f"passwords in {secrets_dir}/<user>.password: hand each agency its own by a secure channel")
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `rogatory broker provision`."""
    broker = commands.add_parser("broker", help="the hub's RabbitMQ").add_subparsers(
        dest="broker_command", required=True
    )
    run = broker.add_parser("provision", help="users, permissions and queues from a verified directory (idempotent)")
    run.add_argument("--directory", required=True, help="the signed directory.json")
    run.add_argument("--authority-key", required=True, help="the authority's base64 public key (your trust anchor)")
    run.add_argument("--management-url", required=True, help="e.g. https://broker.example.org:15671")
    run.add_argument("--admin", required=True, help="a broker administrator")
    run.add_argument(
        "--admin-password-file", help=f"the administrator's password (default: {ADMIN_PASSWORD_VARIABLE} or a prompt)"
    )
    run.add_argument("--vhost", help="default: the directory's network name")
    run.add_argument("--user-prefix", help="agency users are <prefix><AGENCY> (default: '<network>.')")
    run.add_argument("--gateway-user", help="default: <prefix>gateway")
    run.add_argument("--auth", choices=("password", "external"), default="password")
    run.add_argument("--secrets", help="with --auth password: where <user>.password files are kept (0600)")
    run.add_argument(
        "--max-queue-bytes",
        type=int,
        default=DEFAULT_MAX_QUEUE_BYTES,
        help=f"bytes an ingress or inbox queue may hold, then publishes are nacked (default {DEFAULT_MAX_QUEUE_BYTES})",
    )
    run.add_argument("--rabbitmq-conf", help="also write max_message_size into this rabbitmq.conf (on the broker host)")
    run.set_defaults(run=_run)


__all__ = [
    "ADMIN_PASSWORD_VARIABLE",
    "PASSWORD_BYTES",
    "ProvisionResult",
    "active_agencies",
    "add_commands",
    "plan_for",
    "provision_from_directory",
    "read_verified_directory",
]

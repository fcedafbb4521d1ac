"""`rogatory accounts` and `rogatory tokens`: the people at the gateway, and the case systems at an agent.

    rogatory accounts add NAME --role operator|auditor [--file PATH]
    rogatory accounts revoke NAME [--file PATH]
    rogatory accounts list [--file PATH]
    rogatory tokens create --scopes submit+read+ack [--name NAME]
    rogatory tokens revoke TOKEN-or-SHA256 [--revoked-file PATH]

`accounts` edits the gateway's accounts file (`--file`, default
`ROGATORY_ACCOUNTS_FILE`; format in `gateway.accounts`): `add` prints the new
token once and writes only its SHA-256; `revoke` replaces the hash by
`revoked`, which the running gateway obeys from the next request. Each
change is written atomically (a 0600 temporary file, fsync, rename) under a
lock beside the file, so two commands at once do not lose one another's
change. Run them as the gateway's user: the file is that user's alone.

`tokens create` prints a new agent API token once and the entry that
accepts it with its scopes, for `ROGATORY_API_TOKENS_SHA256` (the agent
reads that list at start). `tokens revoke` appends the token's SHA-256 to
the agent's revocation file (`--revoked-file`, default
`ROGATORY_API_TOKENS_REVOKED_FILE`), which the running agent reads again on
change (`agents.guard.RevocationList`): refused from its next request. An
argument of 64 hex digits is taken as the SHA-256 itself (a token this
command makes never looks like one).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from agents.guard import ALL_SCOPES, TokenSpecInvalid, parse_token_specs
from agents.guard import hash_token as hash_api_token
from gateway.accounts import (
    FILE_ROLES,
    Account,
    AccountsFileInvalid,
    Role,
    check_account_name,
    format_accounts,
    hash_token,
    parse_accounts,
)
from runtime.private_files import FILE_MODE, write_private

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
TOKEN_BYTES: Final = 32
"""Random bytes in a token (256 bits, 43 URL-safe characters): not guessable, even at the rate limit."""
_SHA256_HEX: Final = re.compile(r"^[0-9a-fA-F]{64}$")


class _Refused(Exception):
    """A command that cannot do what it was asked; the message says why (never a token)."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


def _out(line: str) -> None:
    """What a command answers (a token, an entry, a listing), on standard output for a script to take."""
    sys.stdout.write(f"{line}\n")


def _note(message: str) -> None:
    sys.stderr.write(f"rogatory: {message}\n")


def _path(given: str | None, variable: str, option: str) -> Path:
    value = given or os.environ.get(variable)
    if not value:
        raise _Refused(f"which file? give {option} or set {variable}", EXIT_USAGE)
    return Path(value)


# -- accounts ----------------------------------------------------------------------------------


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside `path` (`PATH.lock`) while a command reads and rewrites it."""
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_accounts(path: Path) -> list[Account]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise _Refused(f"cannot read {path}: {type(exc).__name__}") from exc
    try:
        return list(parse_accounts(text))
    except AccountsFileInvalid as exc:
        raise _Refused(f"{path}: {exc}") from exc


def _write_accounts(path: Path, accounts: list[Account]) -> None:
    write_private(path, format_accounts(accounts).encode("utf-8"))


def _accounts_add(args: argparse.Namespace) -> int:
    path = _path(args.file, "ROGATORY_ACCOUNTS_FILE", "--file")
    try:
        name = check_account_name(args.name)
    except AccountsFileInvalid as exc:
        raise _Refused(str(exc), EXIT_USAGE) from exc
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with _locked(path):
        accounts = _read_accounts(path)
        existing = next((a for a in accounts if a.name == name), None)
        if existing is not None and not existing.revoked:
            raise _Refused(f"account {name!r} exists; revoke it first to give it a new token")
        account = Account(name, Role(args.role), hash_token(token))
        accounts = [account if a.name == name else a for a in accounts] if existing else [*accounts, account]
        _write_accounts(path, accounts)
    _note(f"{args.role} {name!r} added to {path}; its token, shown this once (only its SHA-256 is kept):")
    _out(token)
    return 0


def _accounts_revoke(args: argparse.Namespace) -> int:
    path = _path(args.file, "ROGATORY_ACCOUNTS_FILE", "--file")
    with _locked(path):
        accounts = _read_accounts(path)
        existing = next((a for a in accounts if a.name == args.name), None)
        if existing is None:
            raise _Refused(f"no account {args.name!r} in {path}")
        if existing.revoked:
            _note(f"{args.name!r} was revoked already")
            return 0
        _write_accounts(path, [Account(a.name, a.role, None) if a is existing else a for a in accounts])
    _note(f"{args.name!r} revoked: the gateway refuses its token from its next request")
    return 0


def _accounts_list(args: argparse.Namespace) -> int:
    path = _path(args.file, "ROGATORY_ACCOUNTS_FILE", "--file")
    for account in _read_accounts(path):
        _out(f"{account.name:<24} {account.role:<9} {'revoked' if account.revoked else 'active'}")
    return 0


# -- agent API tokens ----------------------------------------------------------------------------


def _tokens_create(args: argparse.Namespace) -> int:
    try:
        (template,) = parse_token_specs([f"{'0' * 64}:{args.scopes}"])
    except TokenSpecInvalid as exc:
        raise _Refused(
            f"--scopes: name one or more of {', '.join(sorted(ALL_SCOPES))}, joined by +", EXIT_USAGE
        ) from exc
    scopes = "+".join(sorted(template.scopes))
    token = secrets.token_urlsafe(TOKEN_BYTES)
    who = f" for {args.name}" if args.name else ""
    _note(f"a new agent API token{who} with scopes {scopes}, shown this once (keep no copy but the system's):")
    _out(token)
    _note("accept it by adding this entry to the agent's ROGATORY_API_TOKENS_SHA256 (comma-separated), then restart:")
    _out(f"{hash_api_token(token)}:{scopes}")
    return 0


def _tokens_revoke(args: argparse.Namespace) -> int:
    path = _path(args.revoked_file, "ROGATORY_API_TOKENS_REVOKED_FILE", "--revoked-file")
    given: str = args.token
    digest = given.lower() if _SHA256_HEX.fullmatch(given) else hash_api_token(given)
    try:
        listed = {line.strip().lower() for line in path.read_text(encoding="utf-8").splitlines()}
    except FileNotFoundError:
        listed = set()
    except (OSError, UnicodeDecodeError) as exc:
        raise _Refused(f"cannot read {path}: {type(exc).__name__}") from exc
    if digest in listed:
        _note(f"token {digest[:12]}… was revoked already")
        return 0
    # One appended line in one write: the agent, reading on change, sees the whole line or none of it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{digest}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    _note(f"token {digest[:12]}… revoked in {path}: the agent refuses it from its next request")
    return 0


# -- parser ------------------------------------------------------------------------------------


def _guarded(command: Any) -> Any:  # noqa: ANN401 - an argparse `run` callable
    def run(args: argparse.Namespace) -> int:
        try:
            status: int = command(args)
        except _Refused as exc:
            _note(str(exc))
            return exc.status
        return status

    return run


def add_commands(commands: Any) -> None:  # noqa: ANN401 - argparse's private _SubParsersAction
    """Add `accounts` and `tokens` to the `rogatory` parser's sub-commands."""
    file_help = "the gateway's accounts file (default: ROGATORY_ACCOUNTS_FILE)"
    accounts = commands.add_parser("accounts", help="the gateway's named operators and auditors").add_subparsers(
        dest="accounts", required=True
    )
    add = accounts.add_parser("add", help="add a person; prints their token once, keeps only its SHA-256")
    add.add_argument("name", help="who it is, as the consoles and the audit log will name them")
    add.add_argument("--role", required=True, choices=sorted(str(role) for role in FILE_ROLES))
    add.add_argument("--file", help=file_help)
    add.set_defaults(run=_guarded(_accounts_add))
    revoke = accounts.add_parser("revoke", help="refuse a person's token from the gateway's next request on")
    revoke.add_argument("name")
    revoke.add_argument("--file", help=file_help)
    revoke.set_defaults(run=_guarded(_accounts_revoke))
    listing = accounts.add_parser("list", help="every account, its role, active or revoked")
    listing.add_argument("--file", help=file_help)
    listing.set_defaults(run=_guarded(_accounts_list))

    tokens = commands.add_parser("tokens", help="API tokens of an agency's case systems").add_subparsers(
        dest="tokens", required=True
    )
    create = tokens.add_parser("create", help="a new token, printed once, and its ROGATORY_API_TOKENS_SHA256 entry")
    create.add_argument(
        "--scopes", required=True, help="submit, read, ack, webhooks, joined by + (e.g. submit+read+ack+webhooks)"
    )
    create.add_argument("--name", help="the system it is for (shown in the instructions only)")
    create.set_defaults(run=_guarded(_tokens_create))
    revoke_token = tokens.add_parser("revoke", help="add a token's SHA-256 to the agent's revocation file")
    revoke_token.add_argument("token", help="the token, or its SHA-256 (64 hex digits)")
    revoke_token.add_argument(
        "--revoked-file", help="the agent's revocation file (default: ROGATORY_API_TOKENS_REVOKED_FILE)"
    )
    revoke_token.set_defaults(run=_guarded(_tokens_revoke))


__all__ = ["add_commands"]

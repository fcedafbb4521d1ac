"""Who may use the gateway's API and consoles: named accounts, each with a role, held as SHA-256 of its token.

Roles:

* operator — everything, including the operations endpoints (re-drive, discard);
* auditor  — read-only: audit entries, checkpoints, proofs, tracking;
* reader   — agents: checkpoints and proofs only.

An account is a person (or, for `reader`, the agents): its name is what
the consoles show and what each of its operator actions in the audit log
names. Accounts come from two places, merged by `TokenTable`:

* the accounts file (`ROGATORY_ACCOUNTS_FILE`), one account a line::

      # name  role      sha256 of the token (or `revoked`)
      amina   operator  9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
      tarek   auditor   revoked

  written by `rogatory accounts add / revoke` (`deploy/cli/credentials.py`).
  It is looked at (one `stat`) on every authenticated request and read again
  whenever it was replaced or changed, so an account revoked (or added) holds
  from the next request on, without a restart. A file that cannot be read or
  parsed any more accepts nobody until it is fixed (fail closed), and says so
  in the log;
* the single-token settings of before (`ROGATORY_OPERATOR_TOKEN_SHA256`,
  `ROGATORY_AUDITOR_TOKEN_SHA256`, `ROGATORY_READER_TOKENS_SHA256`): accounts
  named after their role, `operator`, `auditor` and `reader`. These names are
  therefore reserved: the file may not use them.

A token never lies anywhere in the clear: only its SHA-256 (compared in
constant time against every account). A revoked account keeps its line, with
`revoked` instead of a hash: it can no longer sign in, and `list` still shows
who it was.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final

import structlog

from gateway.errors import GatewayError
from runtime.errors import ConfigurationError

if TYPE_CHECKING:
    from gateway.settings import GatewaySettings

log = structlog.get_logger("rogatory.gateway.accounts")

ACCOUNT_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
"""A person's name as the audit log keeps it: letters, digits and `._@-`, at most 64 characters, no spaces."""
REVOKED: Final = "revoked"
"""Written in place of a revoked account's hash."""
_SHA256_HEX: Final = re.compile(r"^[0-9a-f]{64}$")


class Role(StrEnum):
    """What an account may do."""

    OPERATOR = "operator"
    AUDITOR = "auditor"
    READER = "reader"
    METRICS = "metrics"
    """A Prometheus scraper: `/metrics` only (operators and auditors may read it too)."""


FILE_ROLES: Final = frozenset({Role.OPERATOR, Role.AUDITOR})
"""Roles a person in the accounts file may have (readers are the agents' tokens, from the settings)."""
RESERVED_NAMES: Final = frozenset(str(role) for role in Role)
"""The names of the single-token settings' accounts."""


class AccountsFileInvalid(GatewayError):
    """The accounts file holds a line that is not `name role sha256` (the message names the line, never a hash)."""


@dataclass(frozen=True, slots=True)
class Account:
    """One account: who, with which role; `sha256` of its token, or None once revoked."""

    name: str
    role: Role
    sha256: str | None

    @property
    def revoked(self) -> bool:
        """True once revoked: no token signs in as this account."""
        return self.sha256 is None


def hash_token(token: str) -> str:
    """The SHA-256 (hex) under which a token is held."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def check_account_name(name: str) -> str:
    """`name` if it may name a person in the file; `AccountsFileInvalid` otherwise."""
    if not ACCOUNT_NAME.fullmatch(name):
        raise AccountsFileInvalid(
            "an account name is 1 to 64 letters, digits or `._@-`, starting with a letter or digit"
        )
    if name in RESERVED_NAMES:
        raise AccountsFileInvalid(f"{name!r} is reserved for the single-token settings of that role")
    return name


def parse_accounts(text: str) -> tuple[Account, ...]:
    """The accounts of a file's text: `name role sha256|revoked` lines; `#` comments and blank lines ignored.

    Refused (`AccountsFileInvalid`, naming the line): another shape, an
    unknown or reader role, a reserved or malformed name, a name or a hash
    given twice (a token names one person).
    """
    accounts: list[Account] = []
    names: set[str] = set()
    hashes: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 3:
            raise AccountsFileInvalid(f"line {number}: expected `name role sha256` (or `revoked`), three fields")
        name, role_name, digest = fields
        try:
            check_account_name(name)
        except AccountsFileInvalid as exc:
            raise AccountsFileInvalid(f"line {number}: {exc}") from None
        if role_name not in FILE_ROLES:
            raise AccountsFileInvalid(f"line {number}: the role is `operator` or `auditor`")
        if digest != REVOKED and not _SHA256_HEX.fullmatch(digest):
            raise AccountsFileInvalid(f"line {number}: expected the SHA-256 of the token (64 hex digits) or `revoked`")
        if name in names:
            raise AccountsFileInvalid(f"line {number}: account {name!r} is listed twice")
        if digest != REVOKED and digest in hashes:
            raise AccountsFileInvalid(f"line {number}: the same token is listed for two accounts")
        names.add(name)
        hashes.add(digest)
        accounts.append(Account(name, Role(role_name), None if digest == REVOKED else digest))
    return tuple(accounts)


def format_accounts(accounts: Iterable[Account]) -> str:
    """The file's text for `accounts`, which `parse_accounts` reads back."""
    lines = ["# Rogatory gateway accounts: name role sha256-of-token (or `revoked`); see docs/DEPLOY.md, section 5"]
    lines += [f"{a.name} {a.role} {a.sha256 or REVOKED}" for a in accounts]
    return "\n".join(lines) + "\n"


@dataclass
class AccountsFile:
    """The accounts of a file, read again whenever it was replaced or changed (checked on every call)."""

    path: Path
    _seen: tuple[int, int, int, int] | None = field(default=None, init=False)
    _accounts: tuple[Account, ...] = field(default=(), init=False)

    @classmethod
    def open(cls, path: Path) -> AccountsFile:
        """The file, read now: `AccountsFileInvalid` if it is missing, unreadable or malformed (no start)."""
        accounts = cls(path)
        try:
            accounts._load(path.stat())
        except OSError as exc:
            raise AccountsFileInvalid(f"the accounts file {path} cannot be read: {type(exc).__name__}") from exc
        return accounts

    def current(self) -> tuple[Account, ...]:
        """The accounts now; none while the file is missing, unreadable or malformed (logged once per change)."""
        try:
            stat = self.path.stat()
        except OSError as exc:
            if self._seen is not None:
                log.error("accounts_file_unreadable", path=str(self.path), error=type(exc).__name__)
                self._seen, self._accounts = None, ()
            return ()
        if (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size) != self._seen:
            try:
                self._load(stat)
            except (OSError, AccountsFileInvalid) as exc:
                log.error("accounts_file_refused", path=str(self.path), error=str(exc)[:300])
                self._seen = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
                self._accounts = ()
        return self._accounts

    def _load(self, stat: os.stat_result) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise AccountsFileInvalid("the accounts file is not UTF-8 text") from exc
        self._accounts = parse_accounts(text)
        self._seen = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
        log.info(
            "accounts_loaded",
            path=str(self.path),
            active=sum(not a.revoked for a in self._accounts),
            revoked=sum(a.revoked for a in self._accounts),
        )


@dataclass(frozen=True, slots=True)
class TokenTable:
    """Every account the gateway accepts: fixed ones (hash, role), named by their role, and the accounts file's."""

    hashes: tuple[tuple[str, Role], ...]
    accounts: AccountsFile | None = None

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> TokenTable:
        """The single-token settings as accounts `operator`, `auditor`, `reader`, `metrics`; and the accounts file."""
        fixed = [
            *(((settings.operator_token_sha256, Role.OPERATOR),) if settings.operator_token_sha256 else ()),
            *(((settings.auditor_token_sha256, Role.AUDITOR),) if settings.auditor_token_sha256 else ()),
            *((digest, Role.READER) for digest in settings.reader_tokens_sha256),
            *((digest, Role.METRICS) for digest in settings.metrics_tokens_sha256),
        ]
        try:
            accounts = None if settings.accounts_file is None else AccountsFile.open(settings.accounts_file)
        except AccountsFileInvalid as exc:
            raise ConfigurationError(f"ROGATORY_ACCOUNTS_FILE: {exc}") from exc
        return cls(tuple(fixed), accounts)

    def account_of(self, token: str) -> Account | None:
        """The unrevoked account whose token this is, or None (also when it matches two different accounts)."""
        digest = hash_token(token)
        candidates: Sequence[Account] = [Account(str(role), role, expected) for expected, role in self.hashes]
        if self.accounts is not None:
            candidates = [*candidates, *self.accounts.current()]
        # Every candidate is compared (no early exit), each in constant time.
        found = [a for a in candidates if a.sha256 is not None and hmac.compare_digest(digest, a.sha256)]
        if len({(account.name, account.role) for account in found}) > 1:
            log.warning("token_of_several_accounts", accounts=sorted(account.name for account in found))
            return None
        return found[0] if found else None

    def role_of(self, token: str) -> Role | None:
        """The role of `token`'s account, or None."""
        account = self.account_of(token)
        return None if account is None else account.role


__all__ = [
    "ACCOUNT_NAME",
    "FILE_ROLES",
    "RESERVED_NAMES",
    "REVOKED",
    "Account",
    "AccountsFile",
    "AccountsFileInvalid",
    "Role",
    "TokenTable",
    "check_account_name",
    "format_accounts",
    "hash_token",
    "parse_accounts",
]

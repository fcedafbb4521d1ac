"""Named operators and auditors: each person signs in with their own token, is shown by name, is named in the
audit log for what they decide, and is shut out the moment their account is revoked (no restart).

The gateway's real application (API, consoles, operations) over a real store and audit log, its accounts
read by `TokenTable.from_settings` exactly as `gateway.service` does; the accounts file is edited with the
`rogatory accounts` commands, as a person would.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import test_utils

from deploy.cli.commands import main
from gateway.accounts import AccountsFileInvalid, TokenTable, hash_token, parse_accounts
from gateway.api import GatewayApi
from gateway.console_api import ConsoleApi
from gateway.deadletters import DeadLetters, OperationsApi
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.transport import DeadDelivery
from protocol.topology import INGRESS_QUEUE, KIND_SEALED_MESSAGE
from runtime.errors import ConfigurationError
from tests.gateway.conftest import PREFIX, Harness
from tests.support.network import BD, NOW

SETTINGS = {
    "ROGATORY_AMQP_URL": "amqp://u:p@127.0.0.1:5672/net",
    "ROGATORY_DATA_DIR": "/srv/rogatory",
    "ROGATORY_DIRECTORY_FILE": "/srv/rogatory/directory.json",
    "ROGATORY_AUTHORITY_KEY": "k",
    "ROGATORY_KEYSTORE_FILE": "/srv/rogatory/keystore.json",
    "ROGATORY_KEYSTORE_PASSPHRASE_FILE": "/srv/rogatory/passphrase",
}
SHARED_OPERATOR, SHARED_AUDITOR = "the-shared-operator-token", "the-shared-auditor-token"


def add_account(accounts_file: Path, name: str, role: str) -> str:
    """`rogatory accounts add NAME --role ROLE` as a person runs it; the token it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "deploy", "accounts", "add", name, "--role", role],
        env=os.environ | {"ROGATORY_ACCOUNTS_FILE": str(accounts_file)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "shown this once" in done.stderr
    (token,) = done.stdout.split()
    return token


@dataclass
class Gateway:
    """The gateway's HTTP application and its dead-letter desk."""

    url: str
    harness: Harness
    dead_letters: DeadLetters
    session: aiohttp.ClientSession

    async def call(self, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.request(method, self.url + path, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    async def hold(self, name: str) -> int:
        """A submission that died at the ingress and cannot be finished: held for an operator; its id."""
        taken = await self.dead_letters.take(
            DeadDelivery(
                body=f"not an envelope ({name})".encode(),
                kind=KIND_SEALED_MESSAGE,
                user_id=PREFIX + BD,
                amqp_message_id=name,
                headers={"x-first-death-queue": INGRESS_QUEUE, "x-first-death-reason": "delivery_limit"},
            )
        )
        assert taken.result == "held", taken
        return taken.dead_letter_id

    async def operator_leaves(self) -> dict[str, str]:
        """Each operator action in the audit log: its action and target -> the operator it names."""
        found = {}
        for record in await self.harness.store.leaves(limit=1000):
            if record.kind == "operator_action":
                leaf = json.loads(record.leaf)
                found[leaf["identity"]] = leaf["operator"]
        return found


@pytest.fixture
async def start_gateway(harness: Harness) -> AsyncIterator[Callable[[Mapping[str, str]], Any]]:
    """Start the gateway's application with these settings (variables), as `gateway.service` wires it."""
    started: list[tuple[test_utils.TestServer, aiohttp.ClientSession]] = []

    async def start(environ: Mapping[str, str]) -> Gateway:
        settings = GatewaySettings.from_environ(SETTINGS | dict(environ))
        dead_letters = DeadLetters(
            identity=harness.identity,
            directory=harness.net.directory,
            store=harness.store,
            audit=harness.audit,
            pipeline=harness.pipeline,
            publisher=harness.broker,
            limits=harness.net.limits,
            clock=lambda: NOW,
            gateway_user=PREFIX + "gateway",
        )
        consoles = ConsoleApi(
            store=harness.store,
            tree_size=lambda: harness.audit.size,
            directory=harness.net.directory,
            health=lambda: {"status": "ok"},
            metrics=GatewayMetrics(),
            management=None,
            vhost="/",
            clock=lambda: NOW,
        )
        api = GatewayApi(
            store=harness.store,
            audit=harness.audit,
            tokens=TokenTable.from_settings(settings),
            health=lambda: {"status": "ok"},
            directory=harness.net.directory,
            clock=lambda: NOW,
            authority=harness.net.authority.public_key,
            operations=OperationsApi(dead_letters=dead_letters, store=harness.store, management=None, vhost="/"),
            extra_routes=consoles.routes(),
        )
        server = test_utils.TestServer(api.app())
        await server.start_server()
        session = aiohttp.ClientSession()
        started.append((server, session))
        return Gateway(str(server.make_url("")).rstrip("/"), harness, dead_letters, session)

    yield start
    for server, session in started:
        await session.close()
        await server.close()


async def test_two_operators_each_see_their_own_name_and_the_log_names_each_for_what_they_decided(
    start_gateway, tmp_path
):
    """Amina and Badr, two operators with their own tokens: whoami names each, and the `operator_action` leaf of
    the re-drive Amina orders names Amina, that of the discard Badr orders names Badr; the log still verifies."""
    accounts = tmp_path / "accounts"
    amina, badr = add_account(accounts, "amina", "operator"), add_account(accounts, "badr", "operator")
    chadia = add_account(accounts, "chadia.h@oversight", "auditor")
    gateway = await start_gateway({"ROGATORY_ACCOUNTS_FILE": str(accounts)})

    assert await gateway.call(amina, "GET", "/v1/console/whoami") == (200, {"name": "amina", "role": "operator"})
    assert await gateway.call(badr, "GET", "/v1/console/whoami") == (200, {"name": "badr", "role": "operator"})
    assert await gateway.call(chadia, "GET", "/v1/console/whoami") == (
        200,
        {"name": "chadia.h@oversight", "role": "auditor"},
    )

    first, second = await gateway.hold("first"), await gateway.hold("second")
    status, answer = await gateway.call(amina, "POST", f"/v1/ops/dead-letters/{first}/redrive", {"reason": "fixed"})
    assert (status, answer["state"]) == (200, "redriven"), answer
    status, answer = await gateway.call(badr, "POST", f"/v1/ops/dead-letters/{second}/discard", {"reason": "junk"})
    assert (status, answer["state"]) == (200, "discarded"), answer
    status, _ = await gateway.call(chadia, "POST", f"/v1/ops/dead-letters/{second}/discard", {"reason": "no"})
    assert status == 403

    assert await gateway.operator_leaves() == {
        f"operator/redrive/dead-letter/{first}": "amina",
        f"operator/discard/dead-letter/{second}": "badr",
    }
    assert await gateway.harness.audit.checkpoint_if_due(NOW, idle_interval=timedelta(hours=1)) is not None
    status, verdict = await gateway.call(chadia, "GET", "/v1/audit/verification")
    assert (status, verdict["problem"], verdict["entries"]) == (200, None, gateway.harness.audit.size), verdict


async def test_a_revoked_account_is_refused_on_its_next_request_without_restarting_the_gateway(start_gateway, tmp_path):
    """`rogatory accounts revoke amina` while the gateway runs: Amina's very next request is 401, Badr goes on;
    Amina given a new token later signs in with it, never again with the old one."""
    accounts = tmp_path / "accounts"
    amina, badr = add_account(accounts, "amina", "operator"), add_account(accounts, "badr", "operator")
    gateway = await start_gateway({"ROGATORY_ACCOUNTS_FILE": str(accounts)})
    assert (await gateway.call(amina, "GET", "/v1/ops/dead-letters"))[0] == 200

    assert main(["accounts", "revoke", "amina", "--file", str(accounts)]) == 0

    status, answer = await gateway.call(amina, "GET", "/v1/ops/dead-letters")
    assert (status, answer["code"]) == (401, "UNAUTHORIZED")
    assert (await gateway.call(amina, "GET", "/v1/console/whoami"))[0] == 401
    assert (await gateway.call(badr, "GET", "/v1/ops/dead-letters"))[0] == 200

    again = add_account(accounts, "amina", "operator")
    assert await gateway.call(again, "GET", "/v1/console/whoami") == (200, {"name": "amina", "role": "operator"})
    assert (await gateway.call(amina, "GET", "/v1/console/whoami"))[0] == 401


async def test_the_single_token_settings_still_work_as_accounts_named_operator_and_auditor(start_gateway):
    """A gateway configured as before (one operator and one auditor token, no accounts file) signs them in as
    `operator` and `auditor`, and logs the shared operator's decisions as `operator`, as it always did."""
    gateway = await start_gateway(
        {
            "ROGATORY_OPERATOR_TOKEN_SHA256": hash_token(SHARED_OPERATOR),
            "ROGATORY_AUDITOR_TOKEN_SHA256": hash_token(SHARED_AUDITOR),
        }
    )
    assert await gateway.call(SHARED_OPERATOR, "GET", "/v1/console/whoami") == (
        200,
        {"name": "operator", "role": "operator"},
    )
    assert await gateway.call(SHARED_AUDITOR, "GET", "/v1/console/whoami") == (
        200,
        {"name": "auditor", "role": "auditor"},
    )
    held = await gateway.hold("shared")
    assert (await gateway.call(SHARED_AUDITOR, "POST", f"/v1/ops/dead-letters/{held}/discard"))[0] == 403
    assert (await gateway.call(SHARED_OPERATOR, "POST", f"/v1/ops/dead-letters/{held}/discard"))[0] == 200
    assert await gateway.operator_leaves() == {f"operator/discard/dead-letter/{held}": "operator"}


async def test_the_single_token_settings_and_an_accounts_file_work_side_by_side(start_gateway, tmp_path):
    """During a migration both are accepted: the shared operator token as `operator`, each person by name."""
    accounts = tmp_path / "accounts"
    amina = add_account(accounts, "amina", "operator")
    gateway = await start_gateway(
        {"ROGATORY_ACCOUNTS_FILE": str(accounts), "ROGATORY_OPERATOR_TOKEN_SHA256": hash_token(SHARED_OPERATOR)}
    )
    assert (await gateway.call(SHARED_OPERATOR, "GET", "/v1/console/whoami"))[1]["name"] == "operator"
    assert (await gateway.call(amina, "GET", "/v1/console/whoami"))[1]["name"] == "amina"


def test_without_an_accounts_file_both_single_tokens_are_still_required():
    """No accounts file and no auditor token is refused at start, as a missing token always was."""
    with pytest.raises(ConfigurationError, match="ROGATORY_ACCOUNTS_FILE"):
        GatewaySettings.from_environ(SETTINGS | {"ROGATORY_OPERATOR_TOKEN_SHA256": hash_token(SHARED_OPERATOR)})


async def test_an_accounts_file_turned_malformed_accepts_nobody_until_it_is_fixed(start_gateway, tmp_path):
    """A file edited by hand into something unreadable fails closed: every account is refused (not the last good
    list kept, which could hold one just revoked); fixed, they are accepted again. At start it stops the gateway."""
    accounts = tmp_path / "accounts"
    amina = add_account(accounts, "amina", "operator")
    gateway = await start_gateway({"ROGATORY_ACCOUNTS_FILE": str(accounts)})
    good = accounts.read_text()
    accounts.write_text(good + "badr operator not-a-hash\n")
    assert (await gateway.call(amina, "GET", "/v1/console/whoami"))[0] == 401
    accounts.write_text(good)
    assert (await gateway.call(amina, "GET", "/v1/console/whoami"))[0] == 200
    accounts.unlink()
    assert (await gateway.call(amina, "GET", "/v1/console/whoami"))[0] == 401
    with pytest.raises(ConfigurationError, match="ROGATORY_ACCOUNTS_FILE"):
        TokenTable.from_settings(GatewaySettings.from_environ(SETTINGS | {"ROGATORY_ACCOUNTS_FILE": str(accounts)}))


def test_the_accounts_file_holds_each_tokens_hash_never_the_token_and_only_its_owner_reads_it(tmp_path):
    """`accounts add` writes the SHA-256 of the token it printed, not the token, in a 0600 file."""
    accounts = tmp_path / "accounts"
    token = add_account(accounts, "amina", "operator")
    text = accounts.read_text()
    assert token not in text
    assert hash_token(token) in text
    assert stat.S_IMODE(accounts.stat().st_mode) == 0o600
    (account,) = parse_accounts(text)
    assert (account.name, account.role, account.sha256) == ("amina", "operator", hash_token(token))


def test_accounts_commands_add_list_and_revoke_refusing_what_they_cannot_do(tmp_path, capsys):
    """`add` refuses an active name twice and the reserved names; `revoke` an unknown name; `list` shows each
    account's role and state, and no hash."""
    accounts = str(tmp_path / "accounts")
    assert main(["accounts", "add", "amina", "--role", "operator", "--file", accounts]) == 0
    assert main(["accounts", "add", "chadia", "--role", "auditor", "--file", accounts]) == 0
    assert main(["accounts", "add", "amina", "--role", "auditor", "--file", accounts]) == 1
    assert main(["accounts", "add", "operator", "--role", "operator", "--file", accounts]) == 2
    assert main(["accounts", "add", "two words", "--role", "operator", "--file", accounts]) == 2
    with pytest.raises(SystemExit):
        main(["accounts", "add", "badr", "--role", "reader", "--file", accounts])
    assert main(["accounts", "revoke", "nobody", "--file", accounts]) == 1
    assert main(["accounts", "revoke", "chadia", "--file", accounts]) == 0
    capsys.readouterr()
    assert main(["accounts", "list", "--file", accounts]) == 0
    listed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert listed == [["amina", "operator", "active"], ["chadia", "auditor", "revoked"]]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("amina operator\n", "three fields"),
        ("amina reader " + "a" * 64 + "\n", "role"),
        ("amina operator " + "A" * 64 + "\n", "SHA-256"),
        ("operator operator " + "a" * 64 + "\n", "reserved"),
        ("amina operator " + "a" * 64 + "\namina auditor revoked\n", "twice"),
        ("amina operator " + "a" * 64 + "\nbadr operator " + "a" * 64 + "\n", "two accounts"),
    ],
)
def test_account_lines_other_than_name_role_and_hash_are_refused(text, why):
    """A malformed line, a reader or reserved name, a name or a token listed twice: the file is refused."""
    with pytest.raises(AccountsFileInvalid, match=why):
        parse_accounts(text)


def test_a_token_matching_two_accounts_signs_in_as_neither(tmp_path):
    """The shared operator token also listed for a person (a copy-paste): whose action would it be? Neither's."""
    accounts = tmp_path / "accounts"
    accounts.write_text(f"amina operator {hash_token(SHARED_OPERATOR)}\n")
    settings = GatewaySettings.from_environ(
        SETTINGS
        | {"ROGATORY_ACCOUNTS_FILE": str(accounts), "ROGATORY_OPERATOR_TOKEN_SHA256": hash_token(SHARED_OPERATOR)}
    )
    assert TokenTable.from_settings(settings).account_of(SHARED_OPERATOR) is None

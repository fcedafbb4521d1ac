"""Both services' settings: one shared base, every variable named `ROGATORY_*`, names and defaults kept, documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agents.settings import AgentSettings
from deploy.configuration import (
    COMMAND_LINE,
    REGENERATE,
    RENAMED,
    RenamedVariable,
    reference_document,
    system_amqp_url,
    system_management_url,
)
from gateway.settings import GatewaySettings
from runtime.errors import ConfigurationError
from runtime.settings import PREFIX, ServiceSettings, variables_of

ROOT = Path(__file__).resolve().parents[1]
_READ = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()["']([A-Z0-9_]+)["']""")
NOT_OURS = frozenset({"PATH", "XDG_STATE_HOME"})
"""Variables of the system, read by their standard meaning (child processes' `PATH`, the XDG state directory)."""
TOKEN = "0" * 64
COMMON = {
    "ROGATORY_AMQP_URL": "amqp://u:p@127.0.0.1:5672/net",
    "ROGATORY_DATA_DIR": "/srv/rogatory",
    "ROGATORY_DIRECTORY_FILE": "/srv/rogatory/directory.json",
    "ROGATORY_AUTHORITY_KEY": "k",
    "ROGATORY_KEYSTORE_FILE": "/srv/rogatory/keystore.json",
    "ROGATORY_KEYSTORE_PASSPHRASE_FILE": "/srv/rogatory/passphrase",
}
AGENT = COMMON | {
    "ROGATORY_AGENCY": "BD-MOHA-PSD",
    "ROGATORY_API_TOKENS_SHA256": TOKEN,
    "ROGATORY_GATEWAY_BROKER_USER": "gateway",
}
GATEWAY = COMMON | {"ROGATORY_OPERATOR_TOKEN_SHA256": TOKEN, "ROGATORY_AUDITOR_TOKEN_SHA256": TOKEN}
SHARED_DEFAULTS = {
    "amqp_heartbeat_s": 10,
    "watchdog_s": 300.0,
    "http_host": "127.0.0.1",
    "prefetch": 32,
    "sqlite_synchronous": "FULL",
    "log_format": "json",
}
AGENT_DEFAULTS = SHARED_DEFAULTS | {
    "http_port": 8710,
    "api_tokens_revoked_file": None,
    "api_rate_per_s": 500.0,
    "api_rate_burst": 5000,
    "message_ttl_s": 259200.0,
    "gateway_url": None,
    "gateway_token_file": None,
    "witness_interval_s": 2.0,
    "max_merge_delay_s": 60.0,
}
GATEWAY_DEFAULTS = SHARED_DEFAULTS | {
    "http_port": 8700,
    "management_url": None,
    "management_user": None,
    "management_password_file": None,
    "broker_user_prefix": "",
    "reader_tokens_sha256": (),
    "checkpoint_interval_s": 1.0,
    "idle_checkpoint_interval_s": 3600.0,
    "database_url": None,
    "delivery_grace_s": 300.0,
    "retrieval_deadline_s": 604800.0,
    "deadline_sweep_s": 5.0,
    "blob_retention_s": 604800.0,
    "blob_unreferenced_s": 86400.0,
    "blob_sweep_s": 60.0,
    "max_blob_bytes": 68719476736,
    "watched_certificates": (),
    "accounts_file": None,
}


@pytest.mark.parametrize(
    ("settings", "environ", "defaults"),
    [(AgentSettings, AGENT, AGENT_DEFAULTS), (GatewaySettings, GATEWAY, GATEWAY_DEFAULTS)],
)
def test_unset_variables_keep_their_documented_defaults(settings, environ, defaults):
    """Only the required variables set: every other setting takes the default it always had."""
    read = settings.from_environ(environ)
    assert {name: getattr(read, name) for name in defaults} == defaults
    assert read.data_dir == Path("/srv/rogatory")


@pytest.mark.parametrize(("settings", "environ"), [(AgentSettings, AGENT), (GatewaySettings, GATEWAY)])
def test_every_variable_sets_its_field(settings, environ):
    """Each field `name` is read from `ROGATORY_NAME`, and a missing required one is named in the error."""
    names = {variable.name for variable in variables_of(settings)}
    assert set(environ) <= names
    assert all(name.startswith(PREFIX) for name in names)
    read = settings.from_environ(environ | {"ROGATORY_HTTP_PORT": "9000", "ROGATORY_LOG_FORMAT": "console"})
    assert (read.http_port, read.log_format) == (9000, "console")
    missing = next(iter(COMMON))
    with pytest.raises(ConfigurationError, match=f"{settings.service} settings are invalid: {missing}: Field required"):
        settings.from_environ({k: v for k, v in environ.items() if k != missing})


def test_what_both_services_read_is_declared_once():
    """The shared fields live on `ServiceSettings`; neither service redeclares one but its default port."""
    shared = set(ServiceSettings.model_fields)
    for settings in (AgentSettings, GatewaySettings):
        assert issubclass(settings, ServiceSettings)
        redeclared = {name for name in shared if name in settings.__annotations__}
        assert redeclared == {"http_port"}, settings


@pytest.mark.parametrize("settings", [AgentSettings, GatewaySettings])
def test_every_field_is_described(settings):
    """The configuration reference is generated from descriptions: none may be missing."""
    assert all(variable.description for variable in variables_of(settings))
    assert all(field.description for field in settings.model_fields.values())


def test_a_message_may_not_outlive_what_the_exchange_accepts():
    """`ROGATORY_MESSAGE_TTL_S` over the exchange's longest lifetime is refused at start-up."""
    with pytest.raises(ConfigurationError, match=r"ROGATORY_MESSAGE_TTL_S: .*longest lifetime"):
        AgentSettings.from_environ(AGENT | {"ROGATORY_MESSAGE_TTL_S": str(8 * 24 * 3600)})


def test_list_variables_drop_blank_items():
    """Comma-separated variables ignore spaces and empty items; settings hold no secret's value in errors."""
    read = GatewaySettings.from_environ(GATEWAY | {"ROGATORY_READER_TOKENS_SHA256": f" {TOKEN} ,,{TOKEN[:-1]}1"})
    assert read.reader_tokens_sha256 == (TOKEN, TOKEN[:-1] + "1")
    agent = AgentSettings.from_environ(AGENT | {"ROGATORY_API_TOKENS_SHA256": f"{TOKEN}, {TOKEN[:-1]}1:read"})
    assert agent.api_tokens_sha256 == (TOKEN, TOKEN[:-1] + "1:read")


def test_the_configuration_reference_is_up_to_date():
    """`docs/CONFIGURATION.md` is what the settings classes and the command line's variables generate."""
    written = (ROOT / "docs" / "CONFIGURATION.md").read_text(encoding="utf-8")
    assert written == reference_document(), f"docs/CONFIGURATION.md is out of date: run `{REGENERATE}`"


def test_everything_rogatory_reads_from_the_environment_is_named_and_documented():
    """Each variable the code reads by name is `ROGATORY_*` and has a row in the reference."""
    documented = {variable.name for variable in COMMAND_LINE}
    for settings in (AgentSettings, GatewaySettings):
        documented |= {variable.name for variable in variables_of(settings)}
    read = set()
    for package in ("protocol", "runtime", "agents", "gateway", "deploy"):
        for path in (ROOT / package).rglob("*.py"):
            read |= set(_READ.findall(path.read_text(encoding="utf-8")))
    assert read - NOT_OURS <= documented, sorted(read - NOT_OURS - documented)
    assert all(name.startswith(PREFIX) for name in read - NOT_OURS)


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED.items()))
def test_a_variable_set_under_its_old_name_is_refused_not_ignored(old, new):
    """An old name set alone would silently point the dev stack elsewhere: refused, naming the new one."""
    with pytest.raises(RenamedVariable, match=new):
        system_amqp_url({old: "amqp://admin:secret@broker.example:5672/"})
    both = {old: "amqp://old@127.0.0.1:5672/", new: "amqp://new@127.0.0.1:5672/"}
    read = system_amqp_url if new == "ROGATORY_SYSTEM_AMQP_URL" else system_management_url
    assert read(both) == "amqp://new@127.0.0.1:5672/"

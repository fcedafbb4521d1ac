"""The variables the command line and the dev stack read, beside the services' own settings.

Everything Rogatory reads from the environment is named `ROGATORY_*`. The
services read theirs through `runtime.settings.ServiceSettings`; the command
line (`rogatory dev up`, `demo`, `bench`, `audit`, `send`, ...) reads the ones
declared here, through the readers below. Both go into the generated
`docs/CONFIGURATION.md`, which `reference_document` writes
(`rogatory config-reference --out docs/CONFIGURATION.md`); a test fails when
the file and the classes disagree.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from agents.settings import AgentSettings
from deploy.localnet.devstack import DEFAULT_AMQP_URL
from gateway.settings import GatewaySettings
from runtime.settings import Variable, reference_table, variables_of

REGENERATE: Final = "rogatory config-reference --out docs/CONFIGURATION.md"
"""The command that writes the reference again."""

SYSTEM_AMQP_URL: Final = Variable(
    "ROGATORY_SYSTEM_AMQP_URL",
    "string",
    f"`{DEFAULT_AMQP_URL}`",
    "the machine's RabbitMQ, as an administrator, on which `rogatory dev up`, `demo` and `bench` provision "
    "a network (and the tests theirs); for a cluster, one URL per node, comma-separated",
)
SYSTEM_MANAGEMENT_URL: Final = Variable(
    "ROGATORY_SYSTEM_MANAGEMENT_URL",
    "string (optional)",
    "same host as the first system AMQP URL, port 15672 (15671 for `amqps://`)",
    "that broker's management API, through which users, permissions and queues are provisioned "
    "(`deploy/ensure-rabbitmq.sh` waits for it too)",
)
COMMAND_LINE: Final = (
    SYSTEM_AMQP_URL,
    SYSTEM_MANAGEMENT_URL,
    Variable(
        "ROGATORY_TOKEN", "string (optional)", "none", "the gateway token of `rogatory audit` when `--token` is absent"
    ),
    Variable(
        "ROGATORY_AUTHORITY_KEY",
        "string (optional)",
        "none",
        "the directory authority's public key `rogatory audit verify` trusts when `--authority-key` is absent",
    ),
    Variable(
        "ROGATORY_AGENT_TOKEN",
        "string (optional)",
        "none",
        "the agent token of `rogatory send`, `inbox` and `fetch` when `--token` is absent",
    ),
    Variable(
        "ROGATORY_HOSTED_AGENCIES_DIR",
        "path (optional)",
        "none (one agency, from the variables above)",
        "host mode of `python -m agents` (`agents.hosting`): one process runs every agency of this directory, "
        "each from its `<AGENCY>.env` file of agent variables laid over the process's environment; the listener "
        "(`ROGATORY_HTTP_*`, `ROGATORY_LOG_FORMAT`) is the process's",
    ),
    Variable(
        "ROGATORY_BROKER_TLS_DIR",
        "path",
        "`/etc/rabbitmq/tls`",
        "the machine broker's CA and certificate (made by `deploy/ensure-rabbitmq.sh`): the dev stack's services "
        "speak AMQPS to it with that CA",
    ),
    Variable(
        "ROGATORY_UNSAFE_PLAIN_AMQP",
        "`1` or unset",
        "unset",
        "`1`: the dev stack's services speak plain AMQP to the machine's broker (a weakening, with a warning)",
    ),
    Variable(
        "ROGATORY_TSA_DIR",
        "path",
        "`<state>/tsa` (set by `rogatory dev up`)",
        "the keys and certificates of the dev network's own RFC 3161 time-stamp authority "
        "(`python -m deploy.localnet.tsa`, which listens on `ROGATORY_HTTP_PORT` on 127.0.0.1)",
    ),
    Variable(
        "ROGATORY_RABBITMQ_SCRIPTS",
        "path (optional)",
        "found on the `PATH`",
        "directory of `rabbitmq-server` and `rabbitmqctl`, for the private nodes of the fault and failover tests",
    ),
)
"""What the command line and the dev stack read, in the order the reference lists them."""


RENAMED: Final = {
    "AMQP_URL": SYSTEM_AMQP_URL.name,
    "RABBITMQ_MANAGEMENT_URL": SYSTEM_MANAGEMENT_URL.name,
}
"""Variables earlier releases read, and their names now: one still set is refused, never silently ignored."""


class RenamedVariable(ValueError):
    """A variable an earlier release read is set under its old name."""


def _refuse_old_names(environ: Mapping[str, str]) -> None:
    for old, new in RENAMED.items():
        if environ.get(old) and not environ.get(new):
            raise RenamedVariable(f"{old} is no longer read: set {new} instead (docs/CONFIGURATION.md)")


def system_amqp_url(environ: Mapping[str, str]) -> str:
    """The machine's broker the dev stack provisions on (`ROGATORY_SYSTEM_AMQP_URL`)."""
    _refuse_old_names(environ)
    return environ.get(SYSTEM_AMQP_URL.name) or DEFAULT_AMQP_URL


def system_management_url(environ: Mapping[str, str]) -> str | None:
    """Its management API (`ROGATORY_SYSTEM_MANAGEMENT_URL`), or None to derive it from the AMQP URL."""
    _refuse_old_names(environ)
    return environ.get(SYSTEM_MANAGEMENT_URL.name) or None


def reference_document() -> str:
    """`docs/CONFIGURATION.md`: one table per service, then the command line's and the dev stack's variables."""
    return f"""# Configuration

<!-- Generated from agents/settings.py, gateway/settings.py and deploy/configuration.py
     by `{REGENERATE}`: edit those, not this file. -->

Rogatory reads its configuration from environment variables, all named
`ROGATORY_*`. Each service reads its own at start-up, once
(`ServiceSettings.from_environ`): field `name` of its settings is variable
`ROGATORY_NAME`. A missing required variable or an invalid value stops the
service with a message naming each variable at fault. Comma-separated
variables ignore blanks around and between items.

## Agent (`python -m agents`)

{reference_table(variables_of(AgentSettings))}
## Gateway (`python -m gateway`)

{reference_table(variables_of(GatewaySettings))}
## Command line and dev stack (`rogatory`)

These are read by the `rogatory` command, never by a service; `rogatory dev up`
gives each service it starts its own `ROGATORY_*` settings above and none of
the caller's.

{reference_table(COMMAND_LINE)}"""


def write_reference(path: Path | None) -> None:
    """Write `reference_document` to `path`, or to standard output."""
    if path is None:
        sys.stdout.write(reference_document())
    else:
        path.write_text(reference_document(), encoding="utf-8")


__all__ = [
    "COMMAND_LINE",
    "REGENERATE",
    "RENAMED",
    "SYSTEM_AMQP_URL",
    "SYSTEM_MANAGEMENT_URL",
    "RenamedVariable",
    "reference_document",
    "system_amqp_url",
    "system_management_url",
    "write_reference",
]

"""The broker's own size limit, written into `rabbitmq.conf` (used by `deploy/ensure-rabbitmq.sh`).

`max_message_size` is a node setting: the broker closes the channel of a
publisher whose message is larger, before any queue or consumer holds it.
The value follows from the protocol's largest message
(`protocol.topology.BROKER_MAX_MESSAGE_BYTES`).

Command line (idempotent; prints the value, for setting it online)::

    python -m deploy.provision.broker_limits --config /etc/rabbitmq/rabbitmq.conf
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from deploy.provision.tls import update_rabbitmq_conf
from protocol.topology import BROKER_MAX_MESSAGE_BYTES

# The marker keeps the text it was first written with: another text would add a second block to existing configs.
CONF_BEGIN: Final = "# BEGIN rogatory-limits (written by deploy/broker_limits.py; edits inside are overwritten)"
CONF_END: Final = "# END rogatory-limits"


def rabbitmq_conf_block(max_message_bytes: int = BROKER_MAX_MESSAGE_BYTES) -> list[str]:
    """The `rabbitmq.conf` lines of the broker's size limit."""
    return [CONF_BEGIN, f"max_message_size = {max_message_bytes}", CONF_END]


def main(argv: list[str] | None = None) -> None:
    """Write the block into the config file; print the limit in bytes."""
    parser = argparse.ArgumentParser(prog="python -m deploy.provision.broker_limits", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="the broker's rabbitmq.conf")
    args = parser.parse_args(argv)
    update_rabbitmq_conf(args.config, rabbitmq_conf_block())
    print(BROKER_MAX_MESSAGE_BYTES)  # noqa: T201 - the command's output


if __name__ == "__main__":
    main()


__all__ = ["CONF_BEGIN", "CONF_END", "main", "rabbitmq_conf_block"]

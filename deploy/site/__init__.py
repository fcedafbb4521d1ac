"""What an operator runs at each site of a real network (docs/DEPLOY.md): no development code path.

* `secrets`    passphrases (file, environment or prompt) and the files a site writes;
* `authority`  `rogatory authority ...`: the offline directory authority, its draft and signed versions;
* `enrol`      `rogatory agency init`, `rogatory gateway init`: keys made at their site, an enrolment request;
* `broker`     `rogatory broker provision`: the broker from a verified directory, revocations included.

Only public material leaves a site: enrolment requests, signed directories, CA certificates.
"""

from __future__ import annotations

import argparse

from deploy.site import authority, broker, enrol


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the site commands on `rogatory`'s subparsers."""
    authority.add_commands(commands)
    enrol.add_commands(commands)
    broker.add_commands(commands)


__all__ = ["add_commands"]

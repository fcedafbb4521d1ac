"""`python -m deploy`: the `rogatory` command line."""

from deploy.cli import entry

entry()

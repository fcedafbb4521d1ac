"""`rogatory tls`: the network's CA and the certificates issued from it, for HTTPS and for the broker.

    rogatory tls ca --ca-dir DIR [--name CN]
    rogatory tls server-cert --name HOST [--also HOST_OR_IP]... --ca-dir DIR --out-dir DIR
    rogatory tls client-cert (--agency ID [--user-prefix P] | --user NAME) --ca-dir DIR --out-dir DIR

The CA directory holds `ca.pem` (public: every site gets it) and `ca-key.pem`
(private: it stays where certificates are issued). `server-cert` issues the
certificate a listener presents (the gateway's HTTPS, `ROGATORY_HTTP_TLS_*`);
`client-cert` one whose common name is a broker user, for RabbitMQ's EXTERNAL
login over AMQPS. Each prints the files it wrote (docs/DEPLOY.md, section 4).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

from deploy.provision.tls import TlsError, ensure_ca, issue_client_certificate, issue_server_files

DEFAULT_CA_NAME: Final = "Rogatory network CA"
EXIT_FAILED: Final = 1


def _fail(message: str) -> int:
    sys.stderr.write(f"rogatory: {message}\n")
    return EXIT_FAILED


def _cmd_ca(args: argparse.Namespace) -> int:
    try:
        made = ensure_ca(Path(args.ca_dir), args.name)
    except TlsError as exc:
        return _fail(str(exc))
    sys.stdout.write(f"{'made' if made else 'kept'} {Path(args.ca_dir) / 'ca.pem'}\n")
    return 0


def _cmd_server_cert(args: argparse.Namespace) -> int:
    try:
        issued = issue_server_files(Path(args.ca_dir), args.name, Path(args.out_dir), also=args.also or ())
    except TlsError as exc:
        return _fail(str(exc))
    sys.stdout.write(f"{issued.certificate}\n{issued.key}\n")
    return 0


def _cmd_client_cert(args: argparse.Namespace) -> int:
    user = args.user or f"{args.user_prefix}{args.agency}"
    try:
        certificate, key = issue_client_certificate(Path(args.ca_dir), user, Path(args.out_dir))
    except TlsError as exc:
        return _fail(str(exc))
    sys.stdout.write(f"{certificate}\n{key}\n")
    return 0


def add_commands(commands: Any) -> None:  # noqa: ANN401 - argparse's private subparsers action
    """Register `tls ca`, `tls server-cert` and `tls client-cert` on the `rogatory` parser."""
    tls = commands.add_parser("tls", help="the network's CA and certificates").add_subparsers(dest="tls", required=True)
    ca = tls.add_parser("ca", help="make the CA in --ca-dir unless one is there")
    ca.add_argument("--ca-dir", required=True)
    ca.add_argument("--name", default=DEFAULT_CA_NAME, help="the CA's common name")
    ca.set_defaults(run=_cmd_ca)
    server = tls.add_parser("server-cert", help="issue a server certificate (the gateway's HTTPS listener)")
    server.add_argument("--name", required=True, help="the host name (or address) clients connect to")
    server.add_argument("--also", action="append", metavar="HOST_OR_IP", help="another name or address (repeatable)")
    server.add_argument("--ca-dir", required=True)
    server.add_argument("--out-dir", required=True, help="writes NAME.pem and NAME-key.pem there")
    server.set_defaults(run=_cmd_server_cert)
    client = tls.add_parser("client-cert", help="issue a client certificate for the broker's EXTERNAL login")
    who = client.add_mutually_exclusive_group(required=True)
    who.add_argument("--agency", help="the agency whose broker user it is (`<prefix><AGENCY>`)")
    who.add_argument("--user", help="the broker user, as is")
    client.add_argument("--user-prefix", default="", help="the network's ROGATORY_BROKER_USER_PREFIX")
    client.add_argument("--ca-dir", required=True)
    client.add_argument("--out-dir", required=True, help="writes client.pem and client-key.pem there")
    client.set_defaults(run=_cmd_client_cert)


__all__ = ["add_commands"]

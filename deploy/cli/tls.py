"""`rogatory tls`: the network's CA and the certificates issued from it, for HTTPS and for the broker.

    rogatory tls ca --ca-dir DIR [--name CN]
    rogatory tls server-cert --name HOST [--also HOST_OR_IP]... --ca-dir DIR --out-dir DIR
    rogatory tls document-cert --name GATEWAY-ID --ca-dir DIR --out-dir DIR      # the gateway signs reports with it
    rogatory tls client-cert (--agency ID [--user-prefix P] | --user NAME) --ca-dir DIR --out-dir DIR
    rogatory tls client-request (--agency ID [--user-prefix P] | --user NAME) --out-dir DIR   # at the agency
    rogatory tls sign-client --request CSR (--agency ID [--user-prefix P] | --user NAME) --ca-dir DIR --out-dir DIR

The CA directory holds `ca.pem` (public: every site gets it) and `ca-key.pem`
(private: it stays where certificates are issued). `server-cert` issues the
certificate a listener presents (the gateway's HTTPS, `ROGATORY_HTTP_TLS_*`);
`document-cert` the gateway's document-signing certificate (RFC 9336 document
signing only), with which it signs the agencies' case reports (PAdES,
`ROGATORY_REPORT_SIGNING_*`); `client-cert` one whose common name is a broker user, for RabbitMQ's EXTERNAL
login over AMQPS, with its key made where the CA is. For an agency's own
login the key is made at the agency instead: `client-request` writes the key
and a signing request there, only the request travels to the hub, and
`sign-client` certifies it if it names exactly the broker user given; only
the certificate travels back. Each prints the files it wrote (docs/DEPLOY.md,
section 4).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

from deploy.provision.tls import (
    TlsError,
    ensure_ca,
    issue_client_certificate,
    issue_document_signing_files,
    issue_server_files,
    make_client_request,
    sign_client_request,
)

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


def _cmd_document_cert(args: argparse.Namespace) -> int:
    try:
        issued = issue_document_signing_files(Path(args.ca_dir), args.name, Path(args.out_dir))
    except TlsError as exc:
        return _fail(str(exc))
    sys.stdout.write(f"{issued.certificate}\n{issued.key}\n")
    return 0


def _user(args: argparse.Namespace) -> str:
    """The broker user named on the command line: `--user`, or `<prefix><agency>`."""
    return str(args.user or f"{args.user_prefix}{args.agency}")


def _cmd_client_cert(args: argparse.Namespace) -> int:
    user = _user(args)
    try:
        certificate, key = issue_client_certificate(Path(args.ca_dir), user, Path(args.out_dir))
    except TlsError as exc:
        return _fail(str(exc))
    sys.stdout.write(f"{certificate}\n{key}\n")
    return 0


def _cmd_client_request(args: argparse.Namespace) -> int:
    try:
        made = make_client_request(_user(args), Path(args.out_dir))
    except TlsError as exc:
        return _fail(str(exc))
    sys.stdout.write(f"{made.request}\n{made.key}\n")
    return 0


def _cmd_sign_client(args: argparse.Namespace) -> int:
    try:
        certificate = sign_client_request(Path(args.ca_dir), Path(args.request), _user(args), Path(args.out_dir))
    except TlsError as exc:
        return _fail(str(exc))
    sys.stdout.write(f"{certificate}\n")
    return 0


def _broker_user_arguments(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--agency", help="the agency whose broker user it is (`<prefix><AGENCY>`)")
    who.add_argument("--user", help="the broker user, as is")
    parser.add_argument("--user-prefix", default="", help="the network's ROGATORY_BROKER_USER_PREFIX")


def add_commands(commands: Any) -> None:  # noqa: ANN401 - argparse's private subparsers action
    """Register `tls ca`, `server-cert`, `document-cert`, `client-cert`, `client-request` and `sign-client`."""
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
    document = tls.add_parser(
        "document-cert", help="issue the gateway's document-signing certificate (it signs the case reports)"
    )
    document.add_argument("--name", required=True, help="the gateway's id: what a PDF reader shows as the signer")
    document.add_argument("--ca-dir", required=True)
    document.add_argument("--out-dir", required=True, help="writes NAME-documents.pem and NAME-documents-key.pem")
    document.set_defaults(run=_cmd_document_cert)
    client = tls.add_parser("client-cert", help="issue a client certificate for the broker's EXTERNAL login")
    _broker_user_arguments(client)
    client.add_argument("--ca-dir", required=True)
    client.add_argument("--out-dir", required=True, help="writes client.pem and client-key.pem there")
    client.set_defaults(run=_cmd_client_cert)
    request = tls.add_parser("client-request", help="at the agency: a broker key and its signing request")
    _broker_user_arguments(request)
    request.add_argument("--out-dir", required=True, help="writes client-key.pem (stays) and client.csr (travels)")
    request.set_defaults(run=_cmd_client_request)
    sign = tls.add_parser("sign-client", help="at the hub: certify an agency's signing request for its broker user")
    sign.add_argument("--request", required=True, help="the agency's client.csr")
    _broker_user_arguments(sign)
    sign.add_argument("--ca-dir", required=True)
    sign.add_argument("--out-dir", required=True, help="writes client.pem there (it travels back to the agency)")
    sign.set_defaults(run=_cmd_sign_client)


__all__ = ["add_commands"]

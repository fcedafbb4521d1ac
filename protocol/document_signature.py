"""A document's own signature (`integrity.signature`): a detached JWS by its sending agency, or nothing.

The envelope signs every message anyway; this signature travels inside the
document so that the document alone, taken out of the exchange, still names
its signer and can be checked against the directory.

Format: `{"format": "JWS", "signer": <agency id>, "certificate_ref":
"rogatory:signing-key:<key id>", "value": <compact JWS, detached payload>}`
(RFC 7515, appendix F): protected header `{"alg": "EdDSA", "kid": <key id>}`
(RFC 8037), signature by the agency's Ed25519 signing key over
`BASE64URL(header) "." BASE64URL(payload)`, where the payload is the RFC 8785
canonical JSON of the document without `integrity.signature`.

The rule (`check_document_signature`): a document without the field is signed
by its sending agent; a present one must verify under a signing key the
directory gives the agency it names, who must be the document's sender;
anything else (another format, a placeholder value, another signer) is refused
with a stable code, never taken as a signature.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from protocol.directory import PublishedSigningKey
from protocol.encoding import canonical_json
from protocol.errors import AuthenticationFailed, ErrorCode, ProtocolError
from protocol.ids import KeyId, parse_key_id
from protocol.keys import SigningPrivateKey

JWS_FORMAT: Final = "JWS"
KEY_REF_PREFIX: Final = "rogatory:signing-key:"

KeyLookup = Callable[[KeyId], tuple[str, PublishedSigningKey]]
"""A signing key's owner (agency id) and the key, by key id; raises `ProtocolError` for an unknown key."""


@dataclass(frozen=True, slots=True)
class DocumentSigner:
    """Who signed a document, with which key."""

    agency: str
    key_id: KeyId


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _invalid(f"not base64url: {exc}") from exc


def _invalid(detail: str) -> AuthenticationFailed:
    return AuthenticationFailed(f"document signature: {detail}", code=ErrorCode.DOCUMENT_SIGNATURE_INVALID)


def signed_payload(document: dict[str, Any]) -> bytes:
    """What the signature covers: the canonical document without `integrity.signature` (nor an emptied `integrity`)."""
    unsigned = dict(document)  # only the top level and `integrity` change: the rest is shared, never altered
    integrity = unsigned.get("integrity")
    if isinstance(integrity, dict):
        integrity = {name: value for name, value in integrity.items() if name != "signature"}
        if integrity:
            unsigned["integrity"] = integrity
        else:
            del unsigned["integrity"]
    return canonical_json(unsigned)


def _signing_input(protected: str, payload: bytes) -> bytes:
    return f"{protected}.{_b64url(payload)}".encode("ascii")


def sign_document(document: dict[str, Any], agency: str, key: SigningPrivateKey) -> dict[str, Any]:
    """A copy of `document` with `integrity.signature` made by `agency`'s signing `key` (replacing none)."""
    protected = _b64url(canonical_json({"alg": "EdDSA", "kid": str(key.key_id)}))
    signature = key.sign(_signing_input(protected, signed_payload(document)))
    signed = dict(document)  # a new top level and `integrity`; the rest is shared with `document`, never altered
    integrity = signed["integrity"] = dict(signed.get("integrity") or {})
    integrity["signature"] = {
        "format": JWS_FORMAT,
        "signer": agency,
        "certificate_ref": f"{KEY_REF_PREFIX}{key.key_id}",
        "value": f"{protected}..{_b64url(signature)}",
    }
    return signed


def document_signature_block(document: dict[str, Any]) -> dict[str, Any] | None:
    """The `integrity.signature` object of a parsed document, if it has one."""
    integrity = document.get("integrity")
    block = integrity.get("signature") if isinstance(integrity, dict) else None
    return block if isinstance(block, dict) else None


def verify_document_signature(document: dict[str, Any], keys: KeyLookup, *, sender: str) -> DocumentSigner:
    """Verify the document's `integrity.signature` by its sender; refuse anything that is not one.

    Raises `AuthenticationFailed` with `DOCUMENT_SIGNATURE_MISSING` (no
    signature), `DOCUMENT_SIGNATURE_UNSUPPORTED` (a format other than JWS) or
    `DOCUMENT_SIGNATURE_INVALID` (anything else that does not verify: a
    placeholder, a malformed JWS, another algorithm, an unknown key, a signer
    other than the key's owner or the sender, a wrong signature).
    """
    block = document_signature_block(document)
    if block is None:
        raise AuthenticationFailed("the document carries no signature", code=ErrorCode.DOCUMENT_SIGNATURE_MISSING)
    if block.get("format") != JWS_FORMAT:
        raise AuthenticationFailed(
            f"document signature format {str(block.get('format'))[:20]!r} cannot be verified here (only JWS)",
            code=ErrorCode.DOCUMENT_SIGNATURE_UNSUPPORTED,
        )
    value = block.get("value")
    if not isinstance(value, str) or value.count(".") != 2:
        raise _invalid("the value is not a compact JWS with a detached payload")
    protected, detached, signature_text = value.split(".")
    if detached:
        raise _invalid("the payload must be detached (the document itself)")
    try:
        header = json.loads(_unb64url(protected))
    except ValueError as exc:
        raise _invalid("the protected header is not JSON") from exc
    if not isinstance(header, dict) or header.get("alg") != "EdDSA" or set(header) != {"alg", "kid"}:
        raise _invalid('the protected header must be exactly {"alg": "EdDSA", "kid": <key id>}')
    try:
        key_id = parse_key_id(header["kid"])
        owner, key = keys(key_id)
    except ProtocolError as exc:
        raise _invalid(f"key {str(header.get('kid'))[:40]!r} is not a signing key of the directory") from exc
    if block.get("signer") != owner or owner != sender:
        raise _invalid(
            f"signed with a key of {owner}, but names {str(block.get('signer'))[:64]!r} and is sent by {sender}"
        )
    key.verifier.verify(
        _signing_input(protected, signed_payload(document)),
        _unb64url(signature_text),
        code=ErrorCode.DOCUMENT_SIGNATURE_INVALID,
    )
    return DocumentSigner(agency=owner, key_id=key_id)


__all__ = [
    "JWS_FORMAT",
    "KEY_REF_PREFIX",
    "DocumentSigner",
    "KeyLookup",
    "document_signature_block",
    "sign_document",
    "signed_payload",
    "verify_document_signature",
]

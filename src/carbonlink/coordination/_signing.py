"""Ed25519 signatures for the report ledger and its anchor (RFC 8032, through the
``cryptography`` library).

The coordinator holds the private key and signs every report's hash and every anchor
it publishes; whoever checks the ledger needs only the public key, which cannot sign.
(An HMAC key, as carbonlink used before, signs and checks with the same secret: any
verifier holding it could forge a whole chain. That is why there is no HMAC here.)

Keys travel as PEM (PKCS#8 private, SubjectPublicKeyInfo public: what
``openssl pkey`` reads and writes) or as 64 hex digits of the raw 32-byte key, which
fits on one line of an ``.env`` file. ``carbonlink coordinate --keygen PATH`` writes a
pair. A key's id is the first 16 hex digits of the SHA-256 of its raw public key: it
names the key in messages, and each signed report records the id that signed it.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from carbonlink.config import Settings, secret_from_env
from carbonlink.errors import ConfigError

__all__ = [
    "PRIVATE_KEY_MODE",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "anchor_signature_ok",
    "generate_key_pair",
    "key_id",
    "private_key_from_text",
    "public_key_from_text",
    "public_pem",
    "read_public_key",
    "report_signature_ok",
    "settings_public_key",
    "settings_signing_key",
    "sign_anchor",
    "sign_report",
]

#: Only its owner may read the private key file (what ssh-keygen does too).
PRIVATE_KEY_MODE: Final = 0o600
RAW_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
KEY_ID_HEX_DIGITS: Final = 16
# Domain separation: a report's signature can never pass as an anchor's, or the reverse.
_REPORT_CONTEXT: Final = b"carbonlink ledger report v1\n"
_ANCHOR_CONTEXT: Final = b"carbonlink ledger anchor v1\n"
_HEX_KEY: Final = re.compile(r"^[0-9a-fA-F]{64}$")
_HEX_SIGNATURE: Final = re.compile(r"^[0-9a-f]{128}$")
_PRIVATE_FORMAT: Final = "a PEM private key (carbonlink coordinate --keygen) or 64 hex digits"
_PUBLIC_FORMAT: Final = "a PEM public key (the .pub file --keygen writes) or 64 hex digits"


def private_key_from_text(text: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM or 64 hex digits; ValueError saying what is wrong."""
    text = text.strip()
    if _HEX_KEY.match(text):
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text))
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError) as exc:  # TypeError: it is encrypted
            raise ValueError(f"not a readable unencrypted PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"a {type(key).__name__}, not an Ed25519 private key")
        return key
    raise ValueError(f"not an Ed25519 private key: expected {_PRIVATE_FORMAT}")


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM or 64 hex digits; ValueError saying what is wrong."""
    text = text.strip()
    if _HEX_KEY.match(text):
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    if "PRIVATE KEY" in text:
        raise ValueError("this is a private key: verifiers need only the public one (.pub)")
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError as exc:
            raise ValueError(f"not a readable PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"a {type(key).__name__}, not an Ed25519 public key")
        return key
    raise ValueError(f"not an Ed25519 public key: expected {_PUBLIC_FORMAT}")


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return hashlib.sha256(_raw_public(public)).hexdigest()[:KEY_ID_HEX_DIGITS]


def sign_report(key: Ed25519PrivateKey, digest: str) -> str:
    """Signature (128 hex digits) of a report's hash, which covers the chain before it."""
    return key.sign(_REPORT_CONTEXT + digest.encode()).hex()


def report_signature_ok(key: Ed25519PublicKey, digest: str, signature: str) -> bool:
    return _verify(key, _REPORT_CONTEXT + digest.encode(), signature)


def _anchor_message(next_index: int, head: str) -> bytes:
    return _ANCHOR_CONTEXT + f"{next_index}:{head}".encode()


def sign_anchor(key: Ed25519PrivateKey, next_index: int, head: str) -> str:
    return key.sign(_anchor_message(next_index, head)).hex()


def anchor_signature_ok(key: Ed25519PublicKey, next_index: int, head: str, signature: str) -> bool:
    return _verify(key, _anchor_message(next_index, head), signature)


def _verify(key: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    if not _HEX_SIGNATURE.match(signature):
        return False
    try:
        key.verify(bytes.fromhex(signature), message)
    except InvalidSignature:
        return False
    return True


def generate_key_pair(path: str | Path) -> tuple[Path, Path]:
    """Write a new private key to ``path`` (PEM, readable by its owner only) and its
    public key to ``path`` + ``.pub``; refuses to overwrite either."""
    path = Path(path)
    public_path = path.with_name(path.name + ".pub")
    for existing in (path, public_path):
        if existing.exists():
            raise FileExistsError(f"{existing} exists: keep it, or move it away for a new key")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: never follow a file created meanwhile; the mode is set at creation.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_KEY_MODE)
    with os.fdopen(fd, "wb") as out:
        out.write(private)
    public_path.write_text(public_pem(key.public_key()))
    return path, public_path


def settings_signing_key(settings: Settings) -> Ed25519PrivateKey | None:
    """The coordinator's private key: the variable ``coordination.signing_key_env``
    names, else the file ``coordination.signing_key_file`` names; None when neither is
    set. A key that does not load is a ConfigError naming where it came from."""
    config = settings.services.coordination
    text = secret_from_env(config.signing_key_env)
    where, what = f"${config.signing_key_env}", "the environment"
    if not text and config.signing_key_file:
        path = settings.beside_config(config.signing_key_file)
        where, what = "coordination.signing_key_file", str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(settings.path, where, f"cannot read {path}: {exc}") from None
    if not text:
        return None
    try:
        return private_key_from_text(text)
    except ValueError as exc:
        raise ConfigError(settings.path, where, f"{exc} (from {what})") from None


def settings_public_key(settings: Settings) -> Ed25519PublicKey | None:
    """The key a verifier checks signatures with: the file ``coordination.public_key``
    names, else the public half of the signing key when this process holds it."""
    config = settings.services.coordination
    if config.public_key:
        return read_public_key(settings.beside_config(config.public_key), settings.path)
    signing = settings_signing_key(settings)
    return None if signing is None else signing.public_key()


def read_public_key(path: Path, config_path: Path | None = None) -> Ed25519PublicKey:
    """A public key file; ConfigError naming the file when it is missing or is not one."""
    key = "coordination.public_key" if config_path is not None else "--public-key"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(config_path, key, f"cannot read {path}: {exc}") from None
    try:
        return public_key_from_text(text)
    except ValueError as exc:
        raise ConfigError(config_path, key, f"{path}: {exc}") from None

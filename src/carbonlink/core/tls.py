"""TLS trust for every connection carbonlink makes (MQTT, InfluxDB 1.x and 2.x).

Certificates are always verified, hostname included. A private CA is named once, in
``$CARBONLINK_CA_FILE`` (a PEM bundle), and every client trusts it, instead of each
library's own default store (OpenSSL's for MQTT, certifi's for the HTTP clients).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Final

from carbonlink.errors import ConfigError

__all__ = ["CA_FILE_ENV", "ca_file", "client_context"]

CA_FILE_ENV: Final = "CARBONLINK_CA_FILE"


def ca_file() -> str | None:
    """The private CA bundle, if one is named; a name that is not a file is an error."""
    path = os.environ.get(CA_FILE_ENV)
    if not path:
        return None
    if not Path(path).is_file():
        raise ConfigError(None, CA_FILE_ENV, f"no CA bundle at {path}")
    return path


def client_context() -> ssl.SSLContext:
    """A verifying client context: the system's CAs, or the private bundle instead."""
    bundle = ca_file()
    return ssl.create_default_context(cafile=bundle) if bundle else ssl.create_default_context()

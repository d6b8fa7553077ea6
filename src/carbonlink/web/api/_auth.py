"""Bearer tokens for the HTTP API (docs/reliability.md, "Access control").

State-changing endpoints always need the token and are disabled (403, saying how to
enable them) while no token is configured: a fresh deployment changes nothing by
accident. With ``api.read_requires_token`` every request needs it, the dashboard's too;
browsers then get a Basic-auth prompt (any user name, the token as password), and send
it with every fetch and event stream of the page.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response

from carbonlink.config import Settings, secret_from_env

__all__ = ["ApiAccess", "require_token"]

REALM: Final = 'Basic realm="carbonlink", charset="UTF-8"'


@dataclass(frozen=True)
class ApiAccess:
    token: str | None
    token_env: str
    reads_need_token: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiAccess:
        api = settings.services.api
        return cls(secret_from_env(api.token_env) or None, api.token_env, api.read_requires_token)

    def accepts(self, authorization: str | None) -> bool:
        """``Bearer TOKEN`` or ``Basic base64(anyone:TOKEN)``, compared in constant time."""
        if self.token is None or not authorization:
            return False
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer":
            offered = credentials.strip()
        elif scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode()
            except ValueError:
                return False
            offered = decoded.partition(":")[2]
        else:
            return False
        return hmac.compare_digest(offered.encode(), self.token.encode())

    async def guard_reads(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Middleware: every request needs the token when reads are protected."""
        if self.reads_need_token and not self.accepts(request.headers.get("authorization")):
            if self.token is None:
                return JSONResponse(
                    {"detail": f"reads need a token, and ${self.token_env} is not set"}, 503
                )
            return JSONResponse(
                {"detail": "this server needs its API token"},
                401,
                headers={"WWW-Authenticate": REALM},
            )
        return await call_next(request)


def require_token(access: ApiAccess) -> Callable[[Request], None]:
    """A dependency for state-changing endpoints."""

    def check(request: Request) -> None:
        if access.token is None:
            raise HTTPException(
                403,
                f"state-changing endpoints are disabled: set ${access.token_env} "
                "(api.token_env in the config) to enable them",
            )
        if not access.accepts(request.headers.get("authorization")):
            raise HTTPException(
                401, "a valid API token is needed", headers={"WWW-Authenticate": "Bearer"}
            )

    return check

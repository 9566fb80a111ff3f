"""The optional API key: `Authorization: Bearer <key>` (or Anthropic's `x-api-key: <key>`), compared in
constant time."""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping

from sollol_cli.errors import UsageError

# Liveness only: answering "Ollama is running" reveals nothing, and load balancers probe it without a key.
PUBLIC_PATHS = frozenset({"/"})


def api_key_from_env(variable: str | None, env: Mapping[str, str] | None = None) -> bytes | None:
    """The key named by the manifest's `gateway.api_key_env`; a named but unset variable is an error, never
    a silently open gateway."""
    if variable is None:
        return None
    value = (os.environ if env is None else env).get(variable, "")
    if not value.strip():
        raise UsageError(
            f"gateway.api_key_env names ${variable}, but it is not set (or empty)",
            hint=f"export {variable}=<key> before `sollol serve`, or remove gateway.api_key_env",
        )
    return value.strip().encode()


def authorized(header: str | None, key: bytes, x_api_key: str | None = None) -> bool:
    """`header` is `Authorization: Bearer <key>`; `x_api_key` the `x-api-key` header Anthropic's clients send."""
    if x_api_key and hmac.compare_digest(x_api_key.strip().encode(), key):
        return True
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), key)


# The dashboard's cookie holds a value derived from the key, not the key: it opens only the dashboard, and a
# browser's cookie store never holds the API key itself.
UI_COOKIE = "sollol_ui"


def ui_token(key: bytes) -> str:
    return hmac.new(key, b"sollol dashboard", "sha256").hexdigest()


def ui_authorized(header: str | None, cookie: str | None, key: bytes) -> bool:
    """The dashboard's pages and data: the API's own header, or the cookie its login form set."""
    if authorized(header, key):
        return True
    return cookie is not None and hmac.compare_digest(cookie.encode(), ui_token(key).encode())

"""Identity: principals come from the charter's users file; API tokens map a bearer to a principal.

Use :func:`resolve_token` wherever a bearer token is presented (server and CLI share it). Token
management: :func:`create_token`, :func:`list_tokens`, :func:`revoke_token`.
"""

from charter.identity._sessions import create_session, csrf_token, resolve_session, revoke_session
from charter.identity._tokens import (
    IssuedToken,
    TokenInfo,
    create_token,
    list_tokens,
    parse_token,
    resolve_token,
    revoke_token,
    verify_cache,
)

__all__ = [
    "IssuedToken",
    "TokenInfo",
    "create_session",
    "create_token",
    "csrf_token",
    "list_tokens",
    "parse_token",
    "resolve_session",
    "resolve_token",
    "revoke_session",
    "revoke_token",
    "verify_cache",
]

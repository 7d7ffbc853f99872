"""The public surface of charter.identity is exactly this; everything else is private."""

import charter.identity


def test_exported_names() -> None:
    assert sorted(charter.identity.__all__) == sorted(
        [
            "IssuedToken",
            "TokenInfo",
            "create_token",
            "list_tokens",
            "parse_token",
            "resolve_token",
            "revoke_token",
            # the console's sessions (the server uses them)
            "create_session",
            "csrf_token",
            "resolve_session",
            "revoke_session",
            "verify_cache",
        ]
    )
    for name in charter.identity.__all__:
        assert getattr(charter.identity, name) is not None

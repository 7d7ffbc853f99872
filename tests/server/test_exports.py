"""The server's public surface is what ``charter.server`` exports; everything else is private."""

from __future__ import annotations


def test_exported_names() -> None:
    import charter.server as server

    assert sorted(server.__all__) == [
        "RateLimited",
        "ServerSettings",
        "app_from_env",
        "create_app",
        "status_for",
    ]
    for name in server.__all__:
        assert getattr(server, name) is not None

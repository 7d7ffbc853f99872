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


def test_every_setting_is_documented() -> None:
    """Each ``ServerSettings`` field appears in docs/server.md by its environment name."""
    from dataclasses import fields
    from pathlib import Path

    from charter.server import ServerSettings

    docs = (Path(__file__).resolve().parents[2] / "docs" / "server.md").read_text(encoding="utf-8")
    missing = [f.name for f in fields(ServerSettings) if f"`{f.name.upper()}`" not in docs]
    assert not missing, f"settings not documented in docs/server.md: {missing}"

"""Cedar policy: policies generated from the charter plus custom .cedar files; deny by default."""

from __future__ import annotations

from typing import TYPE_CHECKING

from charter.errors import Problem

if TYPE_CHECKING:
    from charter.spec import LoadedCharter


def check_policy_files(loaded: LoadedCharter) -> list[Problem]:
    """Placeholder until the authorizer lands: custom policy files are parsed by cedarpy there."""
    return []


__all__ = ["check_policy_files"]

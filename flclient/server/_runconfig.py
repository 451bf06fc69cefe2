"""Reading Flower run-config values (strings, numbers or booleans, depending on how the run was submitted)."""

from __future__ import annotations

from typing import Any

__all__ = ["truthy"]


def truthy(value: Any) -> bool:
    """A run-config flag: ``true``/``1``/``yes``/``on`` (any case, or the boolean) is on, anything else off."""
    return str(value).strip().lower() in ("1", "true", "yes", "on")

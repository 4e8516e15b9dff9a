"""Helpers for PATCH-style bodies whose absent fields are `msgspec.UNSET`."""

from typing import TypeVar

import msgspec

T = TypeVar("T")


def unset_to_none(value: T | msgspec.UnsetType) -> T | None:
    """`None` for an absent field, the value otherwise."""
    return None if isinstance(value, msgspec.UnsetType) else value

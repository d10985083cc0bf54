"""Typed objects from the dicts an admin writes: unknown keys and bad values named, never ignored."""

from __future__ import annotations

from typing import TypeVar

from traitlets import HasTraits

T = TypeVar("T", bound=HasTraits)


def build_typed(cls: type[T], value, where: str) -> T:
    """``cls(**value)`` for a dict ``value`` (an instance of ``cls`` passes through).

    ``where`` names the place in config for the error, e.g. ``"ResourcePolicy.groups['astro']"``.
    A value that is not a dict, an unknown key, or a trait error raises ValueError saying which.
    """
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a dict, got {type(value).__name__}")
    known = set(cls.class_trait_names())
    unknown = sorted(str(k) for k in set(value) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    try:
        return cls(**value)
    except Exception as e:  # a TraitError (wrong type, below min, ...) with the place in config
        raise ValueError(f"{where}: {e}") from e

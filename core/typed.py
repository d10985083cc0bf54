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


def unknown_settings(config, cls) -> list[str]:
    """``Class.key`` for each key that ``config`` sets on ``cls`` or one of its configurable bases
    of Science Gateway's own and that is no setting of theirs, with the closest setting when one
    is near (a typo). Sections of other projects' classes are theirs to check.

    traitlets only warns about such keys and goes on with the default, so a misspelt setting would
    silently do nothing; callers turn a non-empty answer into a start-up error.
    """
    from traitlets.config import Configurable

    found = []
    for klass in cls.__mro__:
        if not (isinstance(klass, type) and issubclass(klass, Configurable)) or klass.__name__ not in config:
            continue
        if not klass.__module__.startswith("science_gateway."):
            continue
        section = config[klass.__name__]
        if not hasattr(section, "keys"):
            continue
        known = set(klass.class_trait_names(config=True))
        for key in sorted(k for k in section.keys() if k not in known and not k[:1].isupper()):
            import difflib  # only when there is a typo to explain (a server's start-up pays nothing)

            near = difflib.get_close_matches(key, sorted(known), n=1)
            found.append(f"{klass.__name__}.{key}" + (f" (did you mean {near[0]}?)" if near else ""))
    return found


def check_settings(config, classes, where: str) -> None:
    """ValueError naming every unknown setting of ``classes`` in ``config`` (see :func:`unknown_settings`)."""
    unknown = [key for cls in classes for key in unknown_settings(config, cls)]
    if unknown:
        raise ValueError(f"{where}: unknown settings {', '.join(dict.fromkeys(unknown))}")

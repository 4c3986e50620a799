"""Old public names that still work, with a ``DeprecationWarning`` naming the new one.

Renamed keywords go through ``renamed_keywords``; renamed or moved module attributes through
``moved_names`` (a module's ``__getattr__``). Each old name is listed once, beside the code that
renamed it, so the list of what to drop later is a search for these two helpers.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def warn_renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """Warns that ``old`` is now ``new`` (a DeprecationWarning, pointing at the caller's line)."""
    warnings.warn(f"{old} is deprecated: use {new}", DeprecationWarning, stacklevel=stacklevel)


def renamed_keywords(**old_to_new: str) -> Callable[[F], F]:
    """A decorator: the function also takes each old keyword, as its new name, with a DeprecationWarning.

    Raises (from the decorated function):
        TypeError: both the old and the new keyword given.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{func.__qualname__}() got both {old}= and its new name {new}=")
                    warn_renamed(f"{func.__qualname__}({old}=...)", f"{new}=")
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def moved_names(module: str, moved: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that serves each old name in ``moved`` ({old: "package.module:new"}) from its
    new home, with a DeprecationWarning; any other name raises AttributeError as usual."""

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target_module, target = moved[name].split(":")
        warn_renamed(f"{module}.{name}", f"{target_module}.{target}")
        return getattr(importlib.import_module(target_module), target)

    return __getattr__

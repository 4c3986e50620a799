"""Old public names that still work, with a ``DeprecationWarning`` naming the new one.

Renamed keywords go through ``renamed_keywords``; renamed or moved module attributes through
``moved_names`` (a module's ``__getattr__``). Each old name is listed once, beside the code that
renamed it, so the list of what to drop later is a search for these two helpers.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def _package_dir(name: str) -> str | None:
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(file)) + os.sep if file else None


def _internal(filename: str, prefixes: tuple[str, ...]) -> bool:
    """A frame of pxpo_gym, gymnasium or the import machinery (not the user's code)."""
    if filename.startswith("<frozen importlib"):
        return True
    return os.path.abspath(filename).startswith(prefixes) if prefixes else False


def warn_renamed(old: str, new: str) -> None:
    """Warns that ``old`` is now ``new``: a DeprecationWarning attributed to the first caller outside
    pxpo_gym and gymnasium (so Python's default filters show it when that caller is the user's
    ``__main__``, also through ``gym.make``); the outermost frame when every caller is inside them."""
    prefixes = tuple(p for p in (_package_dir("pxpo_gym"), _package_dir("gymnasium")) if p)
    frame = sys._getframe(1)
    while frame.f_back is not None and _internal(frame.f_code.co_filename, prefixes):
        frame = frame.f_back
    module_globals = frame.f_globals
    warnings.warn_explicit(
        f"{old} is deprecated: use {new}",
        DeprecationWarning,
        frame.f_code.co_filename,
        frame.f_lineno,
        module=module_globals.get("__name__", "<unknown>"),
        registry=module_globals.setdefault("__warningregistry__", {}),
    )


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

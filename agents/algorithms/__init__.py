"""The algorithms: DDPO, PXPO and the exact-gradient oracle built in, any other by import path.

``resolve_algorithm("pxpo")`` is the built-in class; ``resolve_algorithm("mypkg.mod:MyAlgo")``
imports ``mypkg.mod`` and checks that ``MyAlgo`` keeps the protocol (``agents.algorithms.base``).
Import paths are taken from the command line or Python only: a name read from a checkpoint
is refused unless given again (``refuse_algorithm_from_file``).
"""

from __future__ import annotations

import dataclasses
import importlib
import re

from .base import Algorithm

BUILTIN = {
    "ddpo": f"{__name__}.ddpo:DDPO",
    "pxpo": f"{__name__}.pxpo:PXPO",
    "oracle": f"{__name__}.oracle:Oracle",
}
"""The built-in algorithms by name."""

IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


def is_builtin(name: str) -> bool:
    return name in BUILTIN


def check_name(name: str) -> None:
    """Refuses what is neither a built-in algorithm nor an import path, without importing anything."""
    if not isinstance(name, str) or not (name in BUILTIN or IMPORT_PATH.match(name)):
        raise ValueError(
            f"algo must be one of {tuple(BUILTIN)} or an import path 'package.module:Class', got algo={name!r}"
        )


def resolve_algorithm(name: str) -> type:
    """The algorithm class a name stands for.

    Raises:
        ValueError: not a built-in name or import path, a module that does not import, a missing
            attribute, or a class that does not keep the protocol (one line, naming the path).
    """
    check_name(name)
    module_name, attr = BUILTIN.get(name, name).split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"algo={name!r}: cannot import module {module_name!r}: {err}") from err
    cls = getattr(module, attr, None)
    if cls is None:
        raise ValueError(f"algo={name!r}: module {module_name!r} has no attribute {attr!r}")
    check_protocol(cls, name)
    return cls


def check_protocol(cls: object, name: str) -> None:
    """Refuses a class that does not keep the algorithm protocol, naming what it lacks."""
    if not isinstance(cls, type):
        raise ValueError(f"algo={name!r} is not a class (got {type(cls).__name__})")
    missing = [
        method
        for method in ("advantages", "loss")
        if not callable(getattr(cls, method, None))
        or (issubclass(cls, Algorithm) and getattr(cls, method) is getattr(Algorithm, method))
    ]
    if not issubclass(cls, Algorithm):
        other = [
            base.__module__ for base in cls.__mro__ if base.__name__ == "Algorithm" and base is not Algorithm
        ]
        hint = (
            f"; it subclasses {other[0]}.Algorithm, the same file under another package name: import it as "
            f"{Algorithm.__module__} (agents.* in a clone, pxpo_gym.agents.* when installed)"
            if other
            else ""
        )
        raise ValueError(
            f"algo={name!r}: {cls.__name__} must subclass {Algorithm.__module__}.Algorithm (the protocol's "
            f"defaults for every optional hook){hint}"
        )
    if missing:
        raise ValueError(f"algo={name!r}: {cls.__name__} does not define {', '.join(missing)}()")
    config_class = getattr(cls, "config_class", None)
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise ValueError(
            f"algo={name!r}: {cls.__name__}.config_class must be a dataclass, got {config_class!r}"
        )


def label(name: str) -> str:
    """A short label for tables and run folders: the built-in name, or the class name for an import
    path (its ``name`` attribute is read only once the class is resolved)."""
    return name if name in BUILTIN else name.split(":")[1]


def refuse_algorithm_from_file(name: str, where: str) -> None:
    """Refuses an algorithm import path read from a file (a checkpoint's config): code named in a file is
    never run; the user passes it again (``--algo``) or adds --trust-code."""
    if name in BUILTIN:
        return
    raise ValueError(
        f"{where} names the algorithm {name!r}, an import path: code named in a file is never run. If you "
        f"trust it, pass it yourself (plugin --path {name}) or add --trust-code"
    )

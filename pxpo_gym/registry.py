"""A registry of plug-in classes by name (the backbones, the samplers): registered from Python only, looked
up by names read from files, so that a file's say-so never imports anything."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(dict[str, T], Generic[T]):
    """``name -> class``, each class a subclass of ``base`` with a non-empty string ``name``.

    Args:
        kind: what the classes are ('backbone', 'sampler'), for messages.
        base: the class every entry subclasses.
        entries: the built-ins, in order.
    """

    def __init__(self, kind: str, base: type, entries: tuple[type, ...] = ()) -> None:
        super().__init__()
        self.kind, self.base = kind, base
        for cls in entries:
            self.register(cls)

    def register(self, cls: T, replace: bool = False) -> T:
        """Adds ``cls`` under its ``name`` (returns it, so it works as a decorator).

        Raises:
            TypeError: not a subclass of the registry's base.
            ValueError: a name that is not a non-empty string, or one already registered to another class
                (unless ``replace``).
        """
        base = f"{self.base.__module__}.{self.base.__qualname__}"
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"a {self.kind} must subclass {base}, got {cls!r}")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{cls.__name__}.name must be a non-empty string, got {name!r}")
        if name in self and not replace and self[name] is not cls:
            raise ValueError(
                f"a {self.kind} named {name!r} is already registered; pass replace=True to replace it"
            )
        self[name] = cls
        return cls

    def named(self, name: Any) -> T:
        """The registered class ``name`` stands for.

        Raises:
            ValueError: not a registered name (the message lists them).
        """
        if not isinstance(name, str) or name not in self:
            raise ValueError(f"{self.kind} must be one of {sorted(self)}, got {self.kind}={name!r}")
        return self[name]

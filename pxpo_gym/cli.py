"""Command-line entry points: a user's error prints one line and exits with status 2.

Every ``python -m ...`` command of the project runs its ``main`` through ``run``:
an error that the input caused (a ValueError from a check, a missing file or
folder, a missing optional package) prints ``PROG: error: MESSAGE`` on stderr and
exits 2, as argparse does for a bad flag; ``--debug`` anywhere on the command line
shows the full traceback instead. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import contextvars
import errno
import sys
from collections.abc import Callable
from typing import Any

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, ImportError)
"""Exceptions that mean "the input was wrong", not "the code is wrong"."""
MACHINE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EADDRINUSE}
"""OSErrors that mean "the machine said no" (a full or read-only disk, no permission, a port in use): one
line too, saying how to go on (a run continues with ``--resume``: every write is recoverable)."""


def run(main: Callable[[], Any], prog: str) -> Any:
    """Calls ``main()`` (which parses ``sys.argv`` itself) with ``--debug`` taken out of ``sys.argv``.

    Raises:
        SystemExit: status 2 after printing one line for an error in ``USER_ERRORS`` (without ``--debug``).
    """
    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv = [sys.argv[0], *(arg for arg in sys.argv[1:] if arg != "--debug")]
    try:
        return main()
    except (*USER_ERRORS, OSError) as err:
        machine = isinstance(err, OSError) and err.errno in MACHINE_ERRNOS
        if debug or not (isinstance(err, USER_ERRORS) or machine):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        if machine and err.errno != errno.EADDRINUSE:
            message += "; free the space or fix the permission and run again (a training run: --resume RUN)"
        print(f"{prog}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


_PARSING = contextvars.ContextVar("pxpo_gym_parsing", default=False)


def parsing() -> bool:
    """Whether a command line is being parsed into a config of sections (``parse(..., sections=True)``)."""
    return _PARSING.get()


class Checked:
    """Mixin of a config dataclass that checks itself (``validate``: no NaN or infinite number, then its own
    ``check``) when built, except while a command line is parsed into a config of sections (``parse(...,
    sections=True)``): there the config that holds it validates it, so that a bad value is one line rather
    than the box tyro draws for a nested error."""

    def __post_init__(self) -> None:
        if not _PARSING.get():
            self.validate()

    def validate(self) -> None:
        """Raises ValueError naming a NaN or infinite number, or what ``check`` refuses."""
        import dataclasses
        import math

        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            numbers = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
                raise ValueError(f"{field.name} must be a finite number, got {field.name}={value!r}")
        self.check()

    def check(self) -> None:
        """Raises ValueError naming a bad value."""


def parse(config_class: type, args: list[str] | None = None, sections: bool = False) -> Any:
    """``tyro.cli`` for a config dataclass whose ``__post_init__`` checks itself: its ValueError reaches
    ``run`` and prints one line (given the class itself, tyro draws a multi-line box for it).

    Args:
        args: the command line (None: ``sys.argv``).
        sections: the config is made of sections and a subcommand (``agents.config.TrainConfig``): flags
            without the sections' prefixes, and the root's flags accepted after the subcommand too.
    """
    import functools

    import tyro

    config = (
        (tyro.conf.OmitArgPrefixes, tyro.conf.OmitSubcommandPrefixes, tyro.conf.CascadeSubcommandArgs)
        if sections
        else ()
    )
    token = _PARSING.set(sections)
    try:
        return tyro.cli(functools.partial(config_class), args=args, config=config)
    finally:
        _PARSING.reset(token)

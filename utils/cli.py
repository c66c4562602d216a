"""Command-line plumbing shared by every script: one-line errors, exit code 2.

Scripts raise :class:`UserError` for anything the user can fix (bad path, bad option,
bad file).  :func:`run` turns it into ``error: <message>`` on stderr and exit code 2, so a
user never sees a traceback for their own mistake.  Genuine bugs still raise normally.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Callable, Iterator, NoReturn


class UserError(Exception):
    """A problem with the user's input, reported as one line and exit code 2."""


@contextlib.contextmanager
def user_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Report exceptions of ``kinds`` raised inside the block as :class:`UserError` s.

    For library code that knows nothing of the command line (``nets`` raises ``ValueError``
    / ``KeyError`` / ``OSError`` for bad arguments and unusable weights): the scripts wrap
    their calls so those become one-line errors, while genuine bugs elsewhere still raise.
    """
    try:
        yield
    except kinds as exc:
        raise UserError(str(exc.args[0]) if exc.args else str(exc)) from exc


def warn(message: str) -> None:
    """Print a one-line warning to stderr (the run goes on)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def fail(message: str) -> NoReturn:
    """Print ``error: message`` and exit with code 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def default_workers(limit: int) -> int:
    """Worker processes by default: the CPUs this process may use, at most ``limit``.

    More workers than CPUs only adds switching (and a DataLoader warning).
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(limit, cpus or 1))


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) with exit code 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)")


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> NoReturn:
    """Call ``main(argv)`` and exit: 0 on success, 2 on :class:`UserError`, 130 on Ctrl-C."""
    try:
        code = main(argv)
    except UserError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130)
    except BrokenPipeError:  # output piped into `head` & co.: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0)
    raise SystemExit(code or 0)

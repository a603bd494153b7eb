"""The ``vallex`` command line.

Each sub-command lives in its own module of this package and exposes ``register(subparsers)``,
which adds an argparse parser whose ``func`` default takes the parsed arguments and returns an
exit code. Bad input raises ``ValueError`` (or ``FileNotFoundError``); ``main`` turns it into a
one-line message and exit code 2, so users never see a traceback for their own mistakes. An output the
system refuses to write (a full disk, a read-only folder: :class:`vallex.files.WriteError`, raised by the
atomic writers every command writes through) is one line naming the file, exit code 2, too. Any other
``OSError`` is one line, with exit code 1. The library's own warnings (e.g. random weights) are one
``Warning: ...`` line each, like the command's other warnings.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import sys
import warnings
from collections.abc import Callable, Sequence

# Modules that provide a sub-command, in the order `vallex --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "vallex.cli.synthesize",
    "vallex.cli.prompts",
    "vallex.cli.weights",
    "vallex.cli.checkpoint",
    "vallex.cli.training",
    "vallex.cli.evaluate",
    "vallex.cli.verify",
    "vallex.cli.translate",
    "vallex.cli.serve",
    "vallex.cli.doctor",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vallex",
        description="VALL-E X: zero-shot cross-lingual text-to-speech (English, Mandarin, Japanese, and the "
        "languages you train it on).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:  # a command module that fails to import is a bug: it is not hidden
        importlib.import_module(name).register(subparsers)
    return parser


def show_warning(message, category, filename, lineno, file=None, line=None, *, fallback: Callable) -> None:
    """``warnings.showwarning`` for the command line: the library's own warnings as one ``Warning: ...`` line
    (the file and source line Python adds would name our code, not the user's); any other by ``fallback``."""
    if category.__module__.split(".")[0] == "vallex":
        print(f"Warning: {message}", file=sys.stderr if file is None else file)
    else:
        fallback(message, category, filename, lineno, file, line)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from vallex.files import WriteError

    try:
        with warnings.catch_warnings():  # restores Python's showwarning when the command ends
            warnings.showwarning = functools.partial(show_warning, fallback=warnings.showwarning)
            return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, WriteError) as error:
        print(f"vallex {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the system refused something else: the user's to fix, no traceback
        print(f"vallex {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

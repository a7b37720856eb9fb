"""Command-line plumbing shared by every ``python -m nas.*`` entry point.

Bad input is a :class:`cvt.UserError`: printed as one line ``error: ...`` on stderr, exit code 2, no
traceback. Ctrl-C exits 130 after the command's own cleanup (finished work is already on disk). Public, so
that scripts (``benchmarks/``) behave like the commands.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from cvt import UserError

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the problem (and ``--help`` to learn more)."""

    def error(self, message: str):  # noqa: D401 - argparse's signature
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` turning user errors into one line and exit code 2."""
    try:
        return int(main(argv) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; rerun with --resume to continue", file=sys.stderr)
        return 130


def parse_shard(text: str) -> tuple[int, int]:
    """An argparse type: ``"K/N"`` -> (K, N) with 0 <= K < N (one of N processes sharing a long job)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index = count = -1
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N with 0 <= K < N (e.g. 0/2 and 1/2 for two processes)")
    return index, count

"""Command-line plumbing shared by every ``python -m nas.*`` entry point.

Bad input is a :class:`cvt.UserError`: printed as one line ``error: ...`` on stderr, exit code 2, no
traceback. Ctrl-C exits 130 after the command's own cleanup (finished work is already on disk). Public, so
that scripts (``benchmarks/``) behave like the commands.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

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


def count(minimum: int = 1):
    """An argparse type: an integer >= ``minimum`` (a usage error otherwise)."""
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {minimum}")
        return value

    convert.__name__ = "count"
    return convert


def parse_shard(text: str) -> tuple[int, int]:
    """An argparse type: ``"K/N"`` -> (K, N) with 0 <= K < N (one of N processes sharing a long job)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index = count = -1
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N with 0 <= K < N (e.g. 0/2 and 1/2 for two processes)")
    return index, count


def add_job_options(parser: argparse.ArgumentParser, results: str) -> None:
    """The options of a long, resumable, sharded measurement (the benchmarks that train for hours): data,
    threads, device, ``--shard K/N``, ``--out`` (resumed when it exists) and ``--merge``; ``results`` names
    what the files hold."""
    from pathlib import Path

    parser.add_argument("--data", default="auto", help="dataset name (see docs/data.md); default auto")
    parser.add_argument("--data-dir", default=None, help="data root (default $CVT_NAS_DATA)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="K/N",
                        help="only the K-th of N cost-balanced shares (run N processes, then --merge)")
    parser.add_argument("--out", type=Path, default=None, help=f"{results} JSON file (resumed when it exists)")
    parser.add_argument("--merge", type=Path, nargs="+", default=[], metavar="JSON",
                        help=f"take {results} already measured from these files (other shards)")


def print_epochs(label: str, epochs: int) -> Callable[[int, float], bool]:
    """A training's ``report`` callback that prints every epoch (a long training can take an hour)."""
    import time

    start = time.perf_counter()

    def report(epoch: int, accuracy: float) -> bool:
        print(f"  {label} epoch {epoch}/{epochs}: {accuracy:.2f}% ({time.perf_counter() - start:.0f} s)", flush=True)
        return False

    return report


def train_references(store: Any, work: Sequence[Any], spec: Any, dataset: Any, *, device: str = "auto",
                     threads: int | None = None) -> None:
    """Train ``work`` (``(nas.ranking.Reference, seed)`` pairs) with ``spec``'s recipe one after the other, printing
    each training's epochs and result and recording it in ``store`` (a ``nas.ranking.OracleStore``) at once."""
    from nas.ranking import train_reference

    for i, (ref, seed) in enumerate(work, 1):
        label = f"[{i}/{len(work)}] {ref.name} {ref.arch_id} seed {seed}"
        print(f"{label}: {ref.macs / 1e9:.2f} GMACs, {ref.params / 1e6:.2f}M params", flush=True)
        record = train_reference(ref, seed, spec, dataset, report=print_epochs(label, spec.recipe.epochs),
                                 device=device, threads=threads)
        store.add(ref, seed, record)
        print(f"{label}: {record['accuracy']:.2f}%" + (f" FAILED: {record['failed']}" if "failed" in record else
                                                      f" in {record['wall_time_s'] / 60:.1f} min"), flush=True)

"""A JSON file of results that belong to fixed settings: refused when the settings differ, merged across
shards, rewritten atomically after every result (a kill loses at most the result in progress). Processes may
share one file: each save first takes, under a lock, what the others saved.

``results[arch_id][sub]`` holds one record (``sub`` a seed, or an estimator's name);
``architectures[arch_id]`` records what each architecture is, so a file can be read on its own.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

from cvt import UserError

from .._paths import atomic_path, locked

__all__ = ["ResultStore"]


class ResultStore:
    """Results measured under ``identity``, kept in ``path`` (None: in memory only).

    Subclasses name their file ``FORMAT`` (and ``WHAT`` for messages); a file of another format or
    version is refused, as is one whose settings differ from ``identity``.
    """

    FORMAT: ClassVar[str] = "cvt-nas results"
    WHAT: ClassVar[str] = "results"
    VERSION: ClassVar[int] = 1

    def __init__(self, path: Path | None, identity: dict[str, Any]):
        self.path = path
        self.identity = identity
        self.architectures: dict[str, dict[str, Any]] = {}
        self.results: dict[str, dict[str, dict[str, Any]]] = {}

    @classmethod
    def at(cls, path: Path | None, identity: dict[str, Any]) -> "ResultStore":
        """The store at ``path`` (created on the first save), after checking it holds ``identity``'s results."""
        store = cls(path, identity)
        if path is not None and path.exists():
            store.merge(path)
        return store

    @classmethod
    def read(cls, path: Path) -> dict[str, Any]:
        """The raw contents of a file of this kind, checked for its format and version."""
        try:
            saved = json.loads(Path(path).read_text())
            if saved.get("format") != cls.FORMAT:
                raise ValueError(f"format is {saved.get('format')!r}")
            if saved.get("version") != cls.VERSION:
                raise ValueError(f"version {saved.get('version')!r}, this code reads version {cls.VERSION}")
            saved["settings"], saved["architectures"], saved["results"]  # noqa: B018 - presence check
        except (OSError, ValueError, AttributeError, KeyError, TypeError) as err:
            raise UserError(f"{path}: not a {cls.WHAT} file ({err})") from None
        return saved

    def merge(self, path: Path) -> int:
        """Take the results of ``path`` that this store lacks; returns how many. Refuses other settings."""
        saved = self.read(path)
        differ = sorted(_differences(saved["settings"], self.identity))
        if differ:
            raise UserError(f"{path} was measured with other settings ({'; '.join(differ)}); pass the same "
                            f"options, or write to another --out")
        for arch_id, record in saved["architectures"].items():
            self.architectures.setdefault(arch_id, record)
        added = 0
        for arch_id, subs in saved["results"].items():
            mine = self.results.setdefault(arch_id, {})
            for sub, record in subs.items():
                if sub not in mine:
                    mine[sub] = record
                    added += 1
        return added

    def has(self, arch_id: str, sub: str) -> bool:
        return sub in self.results.get(arch_id, {})

    def get(self, arch_id: str, sub: str) -> dict[str, Any] | None:
        return self.results.get(arch_id, {}).get(sub)

    def put(self, arch_id: str, sub: str, record: Mapping[str, Any], architecture: Mapping[str, Any]) -> None:
        """Record one result (and what its architecture is), then save the file at once."""
        self.architectures.setdefault(arch_id, dict(architecture))
        self.results.setdefault(arch_id, {})[sub] = dict(record)
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        with locked(self.path):
            if self.path.exists():  # another process sharing the file may have saved results since
                self.merge(self.path)
            data = {"format": self.FORMAT, "version": self.VERSION, "settings": self.identity,
                    "architectures": self.architectures,
                    "results": {a: dict(sorted(subs.items())) for a, subs in self.results.items()}}
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(data, indent=1) + "\n")


def _differences(theirs: Mapping[str, Any], ours: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key in sorted(theirs.keys() | ours.keys()):
        a, b = theirs.get(key), ours.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            yield from _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            yield f"{prefix}{key} {a!r} there, {b!r} here"

"""The ranking oracle: reference architectures near a budget, each trained long enough that seeds agree.

A search decides among candidates of similar cost just under its budget, so that is where an estimator
must rank well (a size prior already ranks a whole space). The oracle samples members of a space
uniformly within a band of the budget (for example 80-100% of 4 GMACs, priced as the search prices
them), adds the hand-made baselines (a preset shrunk uniformly in width until it fits, and the preset
itself as an over-budget anchor), and trains each with a reference recipe. The first members are
trained under further seeds: Kendall tau between two seeds is the noise ceiling, the best rank
agreement any estimator can be expected to reach.

An :class:`OracleStore` is one JSON file. It refuses results measured with other settings (space,
budget, band, sampling seed, recipe, data), skips what is already trained, and merges the files of
shards that ran elsewhere; it is rewritten atomically after every training, so a kill loses at most
the training in progress. Its size (members, seeds) may grow across runs without invalidating it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

import cvt
from cvt import UserError

from ..budget import Budget, parse_budget
from ..cost import shrink_to_fit
from ..metrics import METRICS
from ..proxy import ProxyConfig, proxy_model_config
from ._store import ResultStore

__all__ = ["OracleSpec", "Reference", "OracleStore", "reference_architectures", "jobs",
           "shard_jobs", "balanced_shard", "pending", "train_reference", "REFERENCE_RECIPE", "GPU_RECIPE", "RECIPES",
           "FORMAT"]

FORMAT = "cvt-nas ranking oracle"

# The CPU reference recipe (docs/performance.md, "Ranking oracle"): 20,000 of CIFAR-10's training images
# for 3 epochs, all 10,000 test images for evaluation. Fresh images rather than repeated passes over a
# small subset, whose rankings moved between seeds; about 7 minutes per band member on one core.
REFERENCE_RECIPE = ProxyConfig(epochs=3, train_subset=20000, val_subset=None)
# The GPU edition's recipe: all 50,000 images for 3 epochs (2.5x the CPU recipe's image passes), in bf16 with the
# GPU proxy's batch and learning rate; sized so that the 32 trainings of a 4-GFLOPs oracle, four processes sharing
# one GPU, fit one 9-minute command (benchmarks/gpu_suite.py, part "oracle").
GPU_RECIPE = ProxyConfig(epochs=3, train_subset=None, val_subset=None, batch_size=256, lr=2e-3, warmup_epochs=0.5,
                         device="cuda")
RECIPES = {"cpu": REFERENCE_RECIPE, "gpu": GPU_RECIPE}

# Training settings that say where a result was computed, not what was computed.
_WHERE = ("device", "threads")
_PER_RESULT = _WHERE + ("seed",)  # each result carries its own seed


@dataclass(frozen=True)
class OracleSpec:
    """What an oracle measures. Identity fields must match to share results; size fields may grow.

    Args:
        space: a registered space name (``nas.search``'s ``--space``).
        budget: the budget whose band is measured, as ``nas.search`` takes it (``"4GFLOPs"``, ``"20M params"``).
        band: the band as fractions of the budget, ``(low, high]``, e.g. ``(0.8, 1.0)``.
        sample_seed: seed of the uniform sampling (rejection from the whole space into the band).
        recipe: the reference training (``device`` and ``threads`` only say where it runs).
        baselines: presets added shrunk to fit (width only, largest multiplier that fits) and, when over
            the budget, as they are (the anchor).
        members: sampled architectures (size: the first ``members`` of the seeded sequence).
        seeds: seeds per noise member (size).
        noise_members: how many of the first sampled members are trained under every seed (size; all
            members when there are fewer).
        max_draws: samples drawn before giving up on filling the band.
    """

    space: str = "cvt"
    budget: str = "4GFLOPs"
    band: tuple[float, float] = (0.8, 1.0)
    sample_seed: int = 0
    recipe: ProxyConfig = REFERENCE_RECIPE
    baselines: tuple[str, ...] = ("cvt_13",)
    members: int = 20
    seeds: int = 2
    noise_members: int = 10
    max_draws: int = 200_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "band", tuple(self.band))
        object.__setattr__(self, "baselines", tuple(self.baselines))
        low, high = self.band if len(self.band) == 2 else (math.nan, math.nan)
        if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and 0 <= low < high <= 1):
            raise UserError(f"band {self.band!r}: give two fractions of the budget 0 <= low < high <= 1, "
                            f"e.g. 0.8 1.0")
        if self.budget_value.kind == "latency":
            raise UserError(f"budget {self.budget!r}: the oracle needs a MACs or params budget (a latency "
                            f"depends on the machine); e.g. 4GFLOPs or 20M params")
        for name, minimum in (("members", 1), ("seeds", 1), ("noise_members", 0), ("sample_seed", 0),
                              ("max_draws", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise UserError(f"oracle {name} = {value!r}: expected an integer >= {minimum}")

    @property
    def budget_value(self) -> Budget:
        return parse_budget(self.budget)

    @classmethod
    def from_identity(cls, identity: Mapping[str, Any]) -> "OracleSpec":
        """The spec an oracle file was measured with (its ``settings``), for training more architectures
        under the same recipe; the size fields keep their defaults."""
        budget = identity["budget"]
        return cls(space=identity["space"], budget=str(Budget(budget["kind"], budget["value"])),
                   band=tuple(identity["band"]), sample_seed=identity["sample_seed"],
                   recipe=ProxyConfig.from_dict(identity["recipe"]))

    def identity(self, dataset: Any) -> dict[str, Any]:
        """Everything a result depends on: two stores share results only when these are equal."""
        budget = self.budget_value
        data = dataset.description
        return {"space": self.space, "budget": {"kind": budget.kind, "value": budget.value},
                "band": list(self.band), "sample_seed": self.sample_seed,
                "recipe": {k: v for k, v in self.recipe.to_dict().items() if k not in _PER_RESULT},
                "data": {k: data[k] for k in ("name", "num_classes", "in_chans", "image_size", "train_size",
                                              "val_size")}}


@dataclass(frozen=True)
class Reference:
    """One reference architecture: ``kind`` is ``"sampled"``, ``"shrunk"`` (a baseline fitted to the
    budget) or ``"anchor"`` (a baseline as it is, over the budget); ``cost`` as the budget counts it."""

    arch_id: str
    kind: str
    name: str
    config: Any
    macs: int
    params: int

    @property
    def in_band(self) -> bool:
        return self.kind != "anchor"

    def record(self) -> dict[str, Any]:
        return {"arch_id": self.arch_id, "kind": self.kind, "name": self.name, "macs": self.macs,
                "params": self.params, "config": self.config.to_dict()}


def _price(config: Any, metric: str) -> int:
    # As nas.search prices a candidate: at the config's own resolution, 1000 classes.
    return int(METRICS[metric].compute(config, config.img_size, 1000))


def _reference(config: Any, kind: str, name: str) -> Reference:
    return Reference(config.arch_id(), kind, name, config, _price(config, "macs"), _price(config, "params"))


def reference_architectures(spec: OracleSpec) -> list[Reference]:
    """The sampled band members in sampling order, then each baseline shrunk to fit, then the anchors.

    Raises:
        UserError: an unknown space or baseline, a budget below the space's cheapest member, or a band
            that no draw reached.
    """
    from search_spaces import get_space

    space = get_space(spec.space)
    budget = spec.budget_value

    def cost(c: Any) -> int:
        return _price(c, budget.kind)

    cheapest, dearest = (cost(c) for c in space.extremes(cost))
    if cheapest > budget.value:
        raise UserError(f"budget {spec.budget}: the cheapest member of space {spec.space!r} costs "
                        f"{_format(cheapest, budget.kind)}; raise the budget")
    low, high = (f * budget.value for f in spec.band)
    if high < cheapest or low >= dearest:
        raise UserError(f"band {_format(low, budget.kind)}-{_format(high, budget.kind)} holds no member of space "
                        f"{spec.space!r}, whose members cost {_format(cheapest, budget.kind)}-"
                        f"{_format(dearest, budget.kind)}; choose another --band or --budget")
    rng = np.random.default_rng(spec.sample_seed)
    found: dict[str, Reference] = {}
    for _ in range(spec.max_draws):
        if len(found) == spec.members:
            break
        config = space.sample_config(rng)
        value = cost(config)
        if low < value <= high and config.arch_id() not in found:
            found[config.arch_id()] = _reference(config, "sampled", f"member {len(found) + 1}")
    if len(found) < spec.members:
        raise UserError(f"only {len(found)} of {spec.members} members of space {spec.space!r} fell in the band "
                        f"{_format(low, budget.kind)}-{_format(high, budget.kind)} in {spec.max_draws} draws; "
                        f"widen the band, lower --members or raise --max-draws")
    refs = list(found.values())
    anchors = []
    for name in spec.baselines:
        preset = cvt.preset(name)
        shrunk = shrink_to_fit(preset, lambda c: _price(c, budget.kind) <= budget.value)
        if shrunk is not None and shrunk.arch_id() not in found:
            refs.append(_reference(shrunk, "shrunk", name if shrunk is preset else f"{name} shrunk to fit"))
        if shrunk is not preset:
            anchors.append(_reference(preset, "anchor", name))
    return refs + anchors


def _format(value: float, kind: str) -> str:
    return str(Budget(kind, value)) if value > 0 else "0"


def jobs(spec: OracleSpec, refs: Sequence[Reference]) -> list[tuple[Reference, int]]:
    """(architecture, seed) trainings in the order they run: seed 0 for every reference first, so that
    a partial oracle already ranks the whole set, then the further seeds of the first noise members."""
    noisy = [r for r in refs if r.kind == "sampled"][:spec.noise_members]
    return [(r, 0) for r in refs] + [(r, s) for s in range(1, spec.seeds) for r in noisy]


def balanced_shard(costs: Sequence[float], shard: int, shards: int) -> list[int]:
    """Indices (ascending) that shard ``shard`` of ``shards`` takes so that every shard gets a similar total.

    Costliest first, each to the shard with the least so far (ties by index): every process computes the
    same split from the same costs.
    """
    if not 0 <= shard < shards:
        raise UserError(f"shard {shard}/{shards}: expected 0 <= K < N")
    loads, owner = [0.0] * shards, {}
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        owner[i] = min(range(shards), key=loads.__getitem__)
        loads[owner[i]] += costs[i]
    return [i for i in range(len(costs)) if owner[i] == shard]


def shard_jobs(work: Sequence[tuple[Reference, int]], spec: OracleSpec, dataset: Any, shard: int,
               shards: int) -> list[tuple[Reference, int]]:
    """The jobs of shard ``shard`` of ``shards``, balanced by training MACs at the recipe's resolution, in
    ``work``'s order."""
    from ..cost import analytic_macs

    def trained_macs(ref: Reference) -> int:
        config = proxy_model_config(ref.config, spec.recipe, in_chans=dataset.in_chans)
        return analytic_macs(config, spec.recipe.resolution, num_classes=dataset.num_classes)

    return [work[i] for i in balanced_shard([trained_macs(r) for r, _ in work], shard, shards)]


class OracleStore(ResultStore):
    """One oracle's results in a JSON file: ``results[arch_id][seed]`` -> a training's record.

    Example:
        >>> store = OracleStore.open(path, spec, dataset)           # doctest: +SKIP
        >>> store.has("6a1f0c2e9b3d", 0)                             # doctest: +SKIP
        False
    """

    FORMAT = FORMAT
    WHAT = "ranking-oracle"

    @classmethod
    def open(cls, path: Path | None, spec: OracleSpec, dataset: Any) -> "OracleStore":
        """The store at ``path`` (created on the first save), after checking it was measured like ``spec``."""
        return cls.at(path, spec.identity(dataset))

    def has(self, arch_id: str, seed: int) -> bool:  # type: ignore[override]
        return super().has(arch_id, str(seed))

    def add(self, ref: Reference, seed: int, result: Mapping[str, Any]) -> None:
        """Record one training and save the file at once."""
        self.put(ref.arch_id, str(seed), result, ref.record())

    def accuracy(self, arch_id: str, seed: int = 0) -> float:
        """Final accuracy of one training; NaN when missing or failed."""
        result = self.get(arch_id, str(seed))
        return float("nan") if result is None else float(result.get("accuracy", math.nan))

    def seeds(self, arch_id: str) -> list[int]:
        """The seeds ``arch_id`` was trained under."""
        return sorted(int(s) for s in self.results.get(arch_id, {}))

    def reuse(self, path: Path, refs: Iterable[Reference], seeds: int) -> int:
        """Take from ``path`` (another file of trainings: an oracle, a comparison) the results of ``refs`` under
        seeds below ``seeds`` that this store lacks; returns how many. Refused unless that file's recipe and data
        are this store's: a training is reused only where repeating it would give the same result.
        """
        saved = self.read(path)
        for key in ("recipe", "data"):
            if saved["settings"][key] != self.identity[key]:
                raise UserError(f"--reuse {path}: trained with another {key} ({saved['settings'][key]} there, "
                                f"{self.identity[key]} here)")
        taken = 0
        for ref in refs:
            for seed, record in saved["results"].get(ref.arch_id, {}).items():
                if int(seed) < seeds and not self.has(ref.arch_id, int(seed)):
                    self.put(ref.arch_id, seed, record, ref.record())
                    taken += 1
        return taken


def pending(store: OracleStore, work: Iterable[tuple[Reference, int]]) -> list[tuple[Reference, int]]:
    """The jobs of ``work`` that ``store`` has not recorded yet."""
    return [(r, s) for r, s in work if not store.has(r.arch_id, s)]


def train_reference(ref: Reference, seed: int, spec: OracleSpec, dataset: Any, *,
                    report: Any = None, **where: Any) -> dict[str, Any]:
    """One reference training of ``ref`` under ``seed``, as the record a store keeps.

    ``where`` (``device``, ``threads``) says where it runs. A training that fails (diverged, out of
    memory) is recorded with NaN accuracy and its reason: it is part of what the recipe does.
    """
    from ..proxy import TrainingFailed, train_proxy

    recipe = dataclasses.replace(spec.recipe, seed=seed, **where)
    try:
        result = train_proxy(ref.config, dataset, recipe, report=report)
    except TrainingFailed as err:
        return {"accuracy": math.nan, "failed": err.reason}
    return {"accuracy": result.accuracy, "best_accuracy": result.best_accuracy,
            "history": [{k: h[k] for k in ("epoch", "accuracy", "train_loss", "elapsed_s")} for h in result.history],
            "wall_time_s": result.wall_time_s, "train_images_per_s": result.train_images_per_s,
            "device": result.device, "threads": result.threads}

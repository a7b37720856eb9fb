"""Training a CvT supernet once for a range of members, and reading a member's inherited accuracy from it.

Each step trains several members on the same batch (NASViT's *sandwich rule*): the largest and the smallest of the
range (by MACs, within the seeded pool that stands for it), which bound what every other member sees, and a few drawn
at random. The largest learns from the labels;
the others from the largest's predictions (*in-place distillation*), which NASViT and Once-for-All found steadier
for small members than the labels alone. Gradients of all members add up before one clipped AdamW step, after a
linear warm-up: naive weight sharing trains vision transformers badly (NASViT; ViTAS), and these are the usual
remedies. Members share BatchNorm statistics as they share weights, so a member's statistics are re-estimated on
a few training batches before it is evaluated (:meth:`ElasticCvT.recalibrate`).

The range is a space's members whose MACs lie in ``[low, high]``; a fixed, seeded pool of them stands for it, so
a training (and its resumption) always draws from the same members. A training is checkpointed every
``checkpoint_s`` seconds and resumes after a kill where it stopped; finished supernets are cached under a key of
space, range, data and recipe (:func:`supernet_for`), so a later search inside the range reuses them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import timm.optim
import timm.scheduler
import torch
import torch.nn.functional as F

from cvt import CvTConfig, UserError
from search_spaces import CvTSpace

from .._cpu import available_cpus
from .._paths import atomic_path, default_cache_dir, read_saved
from ..cost import analytic_macs
from ..data import Dataset
from ..devices import resolve_device
from ..proxy import augment, normalize
from ._elastic import ElasticCvT, covering_config

__all__ = ["SupernetRecipe", "CPU_RECIPE", "GPU_RECIPE", "RECIPES", "MemberRange", "Supernet", "train_supernet",
           "supernet_for", "supernet_dir", "cached_ranges", "choose_range", "recipe_named", "load_supernet"]

logger = logging.getLogger(__name__)

FORMAT = "cvt-nas supernet"
ABOUT = "supernet.json"  # beside supernet.pt: its key, range, recipe and data, readable without loading the weights
VAL_IMAGES = 1000  # scoring defaults (Supernet.scorer); the search's are its own
CALIBRATION_BATCHES = 1  # measured: 4 batches ranked no better than 1 (docs/performance.md)
CHECKPOINT_FORMAT = "cvt-nas supernet checkpoint"


@dataclass(frozen=True)
class SupernetRecipe:
    """How a supernet is trained (what its cache key holds, with the range and the data).

    Attributes:
        steps: optimizer steps; each trains ``2 + random_members`` members on one batch.
        batch_size, lr, weight_decay, label_smoothing: AdamW with a linear warm-up over ``warmup`` of the steps,
            then cosine decay to 1% of ``lr``.
        clip: the gradient norm is clipped to this after all members of a step added theirs.
        random_members: members drawn at random from the range per step, beside the largest and smallest.
        distill: the non-largest members learn from the largest's predictions instead of the labels. Off by
            default: from a near-chance largest member it stalled the CPU recipe (``docs/performance.md``,
            "Weight-sharing supernet"), where the labels alone trained.
        resolution, train_subset: the training images (None: every one).
        pool: members of the range drawn once (seeded) that the training samples from.
        bf16: autocast on CUDA.
    """

    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.1
    label_smoothing: float = 0.1
    clip: float = 1.0
    random_members: int = 2
    distill: bool = False
    resolution: int = 32
    train_subset: int | None = None
    pool: int = 500
    seed: int = 0
    bf16: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "resolution", "pool"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"supernet recipe: {name} = {value!r} is not an integer >= 1")
        if not isinstance(self.random_members, int) or self.random_members < 0:
            raise UserError(f"supernet recipe: random_members = {self.random_members!r} is not an integer >= 0")
        for name in ("lr", "clip"):
            if not getattr(self, name) > 0:
                raise UserError(f"supernet recipe: {name} = {getattr(self, name)!r} must be positive")
        if not 0 <= self.warmup < 1 or not 0 <= self.label_smoothing < 1:
            raise UserError("supernet recipe: warmup and label_smoothing are shares in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CPU_RECIPE = SupernetRecipe()
# Sized by estimate to train within about six minutes of one GPU (benchmarks/gpu_suite.py, part "supernet") until a
# GPU run measures it: 4x the CPU recipe's images per member.
GPU_RECIPE = SupernetRecipe(steps=1500, batch_size=256, lr=2e-3)
RECIPES = {"cpu": CPU_RECIPE, "gpu": GPU_RECIPE}


@dataclass(frozen=True)
class MemberRange:
    """The members of ``space`` whose MACs at ``resolution`` lie in ``[low, high]`` (0 and infinity: all)."""

    space: CvTSpace
    low: float = 0.0
    high: float = math.inf
    resolution: int | None = None

    def __post_init__(self) -> None:
        covering_config(self.space)  # a CvT space, or one clear line
        if not 0 <= self.low <= self.high:
            raise UserError(f"supernet range: low {self.low:g} and high {self.high:g} MACs are not a range")

    @property
    def at(self) -> int:
        return self.resolution or self.space.img_size

    def macs(self, config: CvTConfig) -> float:
        return float(analytic_macs(config, self.at))

    def contains(self, config: CvTConfig) -> bool:
        return self.space.contains(config) and self.low <= self.macs(config) <= self.high

    def pool(self, size: int, seed: int) -> list[CvTConfig]:
        """``size`` distinct members drawn at random (seeded), cheapest first."""
        rng = np.random.default_rng(seed)
        found: dict[str, tuple[float, CvTConfig]] = {}
        for _ in range(200 * size):
            config = self.space.sample_config(rng)
            macs = self.macs(config)
            if self.low <= macs <= self.high:
                found.setdefault(config.arch_id(), (macs, config))
                if len(found) == size:
                    break
        if not found:
            raise UserError(f"space {self.space.name!r} has no members between {self.low / 1e9:.3g} and "
                            f"{self.high / 1e9:.3g} GMACs at {self.at}px; widen the range")
        return [config for _, config in sorted(found.values(), key=lambda item: item[0])]

    def key(self) -> dict[str, Any]:
        """What identifies the range in a cache key: the space's dimensions, not only its name."""
        dims = {p.name: [repr(v) for v in p.values] for p in self.space.params}
        return {"space": self.space.name, "dimensions": dims, "constants": repr(sorted(self.space.constants.items())),
                "low": self.low, "high": self.high if math.isfinite(self.high) else None, "resolution": self.at}


@dataclass
class Supernet:
    """A trained supernet with what it was trained on.

    Attributes:
        model: the weights (:class:`ElasticCvT`).
        members: the range it serves; recipe: how it was trained; data: the training data's description.
        history: per logged step, the losses of the largest, smallest and random members.
        path: where it is stored.
    """

    model: ElasticCvT
    members: MemberRange
    recipe: SupernetRecipe
    data: dict[str, Any]
    history: list[dict[str, float]]
    path: Path | None = None

    def covers(self, config: CvTConfig) -> bool:
        """Whether ``config`` is a member of the range (its input channels are the data's, whatever it says)."""
        channels = self.model.covering.in_chans
        return self.members.contains(config) and self.model.covers(config.replace(in_chans=channels))

    def scorer(self, dataset: Dataset, *, device: str = "cpu", val_images: int | None = VAL_IMAGES,
               calibration_batches: int = CALIBRATION_BATCHES, eval_batch_size: int = 256,
               seed: int = 0) -> Callable[[CvTConfig], float]:
        """``score(config)``: the member's top-1 accuracy (%) with inherited weights on ``val_images`` validation
        images (class-balanced, seeded; None: all), its BatchNorm statistics re-estimated first on the same
        ``calibration_batches`` training batches for every member."""
        if isinstance(calibration_batches, bool) or not isinstance(calibration_batches, int) \
                or calibration_batches < 1:
            raise UserError(f"supernet scoring: calibration_batches = {calibration_batches!r} is not an integer >= 1")
        data = dataset.select(train_subset=self.recipe.train_subset, val_subset=val_images,
                              resolution=self.recipe.resolution, seed=seed)
        dev = resolve_device(device)
        model = self.model.to(dev).eval()
        order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(seed))
        calibration = [normalize(data.train_x[idx], data).to(dev)
                       for idx in order[:calibration_batches * self.recipe.batch_size].split(self.recipe.batch_size)]
        val = [(normalize(x, data).to(dev), y.to(dev))
               for x, y in zip(data.val_x.split(eval_batch_size), data.val_y.split(eval_batch_size))]
        amp = self.recipe.bf16 and dev.type == "cuda"

        @torch.no_grad()
        def score(config: CvTConfig) -> float:
            config = config.replace(in_chans=data.in_chans)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                model.recalibrate(config, calibration)
                correct = sum(int((model(x, config).argmax(dim=1) == y).sum()) for x, y in val)
            return 100.0 * correct / max(1, len(data.val_y))

        return score


def cache_key(members: MemberRange, data: dict[str, Any], recipe: SupernetRecipe) -> str:
    text = json.dumps({"format": FORMAT, "range": members.key(), "data": data, "recipe": recipe.to_dict()},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _data_key(dataset: Dataset, recipe: SupernetRecipe) -> dict[str, Any]:
    """What identifies the training images: the dataset (not how it was subset before) and the recipe's choice."""
    skip = ("warnings", "num_classes", "in_chans", "image_size", "train_size", "val_size")
    return {**{k: v for k, v in dataset.description.items() if k not in skip},
            "classes": dataset.num_classes, "train": {"subset": recipe.train_subset, "resolution": recipe.resolution,
                                                      "seed": recipe.seed}}


def _select(dataset: Dataset, recipe: SupernetRecipe) -> Dataset:
    return dataset.select(train_subset=recipe.train_subset, resolution=recipe.resolution, seed=recipe.seed)


def _distill_loss(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the teacher's predicted distribution."""
    return torch.sum(-teacher.softmax(dim=-1) * logits.log_softmax(dim=-1), dim=-1).mean()


def train_supernet(members: MemberRange, dataset: Dataset, recipe: SupernetRecipe = CPU_RECIPE, *,
                   directory: Path, device: str = "auto", threads: int | None = None,
                   checkpoint_s: float = 60.0, progress: bool | None = None,
                   on_step: Callable[[int, dict[str, float]], None] | None = None) -> Supernet:
    """Train a supernet over ``members`` on ``dataset`` into ``directory`` (``supernet.pt``), resuming the
    training checkpointed there after a kill.

    Args:
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda[:N]``.
        threads: CPU threads (default: the CPUs this process may use).
        checkpoint_s: seconds between checkpoints (one after the last step too).
        progress: a progress bar with the members' losses (default: on a terminal).
        on_step: called as ``on_step(step, losses)`` after every step (1-based).

    Raises:
        UserError: a checkpoint in ``directory`` from other settings, or no member in the range.
    """
    directory = Path(directory)
    data = _select(dataset, recipe)
    data_key = _data_key(dataset, recipe)
    key = cache_key(members, data_key, recipe)
    final, partial = directory / "supernet.pt", directory / "checkpoint.pt"
    if final.is_file():
        return load_supernet(final, members=members, expect_key=key)
    dev = resolve_device(device)
    pool = [config.replace(in_chans=data.in_chans) for config in members.pool(recipe.pool, recipe.seed)]
    largest, smallest = pool[-1], pool[0]
    covering = covering_config(members.space).replace(in_chans=data.in_chans)
    previous_threads, threads = torch.get_num_threads(), threads or available_cpus()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(recipe.seed)
            model = ElasticCvT(covering, data.num_classes).to(dev)
            optimizer = timm.optim.create_optimizer_v2(model.net, opt="adamw", lr=recipe.lr,
                                                       weight_decay=recipe.weight_decay)
            warmup = round(recipe.warmup * recipe.steps)
            scheduler = timm.scheduler.CosineLRScheduler(
                optimizer, t_initial=max(1, recipe.steps - warmup), lr_min=0.01 * recipe.lr, warmup_t=warmup,
                warmup_lr_init=0.01 * recipe.lr, warmup_prefix=True, t_in_epochs=False)
            gen = torch.Generator().manual_seed(recipe.seed)
            rng = np.random.default_rng(recipe.seed)
            step, history = 0, []
            if partial.is_file():
                state = read_saved(partial, CHECKPOINT_FORMAT, "supernet checkpoint")
                if state["key"] != key:
                    raise UserError(f"{partial}: a supernet training with other settings; delete it or choose "
                                    f"another directory")
                model.net.load_state_dict(state["net"])
                optimizer.load_state_dict(state["optimizer"])
                gen.set_state(state["generator"])
                rng.bit_generator.state = state["numpy"]
                torch.set_rng_state(state["torch"])
                step, history = state["step"], state["history"]
                logger.info("supernet: resuming at step %d of %d", step, recipe.steps)
            _training_loop(model, data, recipe, dev, optimizer, scheduler, gen, rng, pool, step, history, key,
                           partial, checkpoint_s, progress, on_step)
    finally:
        torch.set_num_threads(previous_threads)
    directory.mkdir(parents=True, exist_ok=True)
    about = {"format": FORMAT, "key": key, "range": members.key(), "recipe": recipe.to_dict(), "data": data_key,
             "largest": largest.arch_id(), "smallest": smallest.arch_id(), "device": str(dev),
             "trained_s": history[-1].get("wall_s") if history else None,
             "threads": threads if dev.type == "cpu" else None}  # of this session's training, when resumed
    with atomic_path(final) as tmp:
        torch.save({**about, "covering": covering.to_dict(), "num_classes": data.num_classes,
                    "net": model.net.state_dict(), "history": history}, tmp)
    with atomic_path(directory / ABOUT) as tmp:
        tmp.write_text(json.dumps(about, indent=1, default=str))
    partial.unlink(missing_ok=True)
    return Supernet(model.cpu().eval(), members, recipe, data_key, history, final)


def _training_loop(model: ElasticCvT, data: Dataset, recipe: SupernetRecipe, dev: torch.device, optimizer: Any,
                   scheduler: Any, gen: torch.Generator, rng: np.random.Generator, pool: list[CvTConfig],
                   step: int, history: list[dict[str, float]], key: str, partial: Path, checkpoint_s: float,
                   progress: bool | None, on_step: Callable[[int, dict[str, float]], None] | None) -> None:
    """The steps from ``step`` on, checkpointed every ``checkpoint_s`` seconds."""
    from tqdm import tqdm

    largest, smallest = pool[-1], pool[0]
    train_x, train_y = data.train_x, data.train_y
    pad = max(1, recipe.resolution // 8)
    amp = recipe.bf16 and dev.type == "cuda"
    bar = tqdm(total=recipe.steps, initial=step, unit="step", desc="supernet",
               disable=None if progress is None else not progress)  # None: on a terminal only
    saved_at = started = time.monotonic()
    before = history[-1].get("wall_s", 0.0) if history else 0.0  # training seconds of earlier sessions
    model.train()
    try:
        while step < recipe.steps:
            idx = torch.randint(len(train_y), (recipe.batch_size,), generator=gen)
            x = normalize(augment(train_x[idx], gen, pad), data).to(dev)
            y = train_y[idx].to(dev)
            randoms = [pool[i] for i in rng.integers(len(pool), size=recipe.random_members)]
            scheduler.step_update(num_updates=step)
            optimizer.zero_grad(set_to_none=True)
            losses: dict[str, float] = {}
            teacher = None
            for name, member in [("largest", largest), ("smallest", smallest)] + [("random", m) for m in randoms]:
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    logits = model(x, member)
                    if teacher is None or not recipe.distill:
                        loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
                    else:
                        loss = _distill_loss(logits.float(), teacher)
                if teacher is None:
                    teacher = logits.detach().float()
                value = loss.item()
                if not math.isfinite(value):
                    raise UserError(f"supernet training diverged at step {step} ({name} member: loss {value}); "
                                    f"lower the recipe's lr")
                loss.backward()
                losses[name] = losses.get(name, 0.0) + value / (recipe.random_members if name == "random" else 1)
            torch.nn.utils.clip_grad_norm_(model.net.parameters(), recipe.clip)
            optimizer.step()
            step += 1
            if step % 10 == 0 or step == recipe.steps:
                history.append({"step": step, "lr": optimizer.param_groups[0]["lr"], **losses,
                                "wall_s": round(before + time.monotonic() - started, 1)})
            bar.update(1)
            bar.set_postfix({name: f"{loss:.2f}" for name, loss in losses.items()}, refresh=False)
            if on_step is not None:
                on_step(step, losses)
            if time.monotonic() - saved_at >= checkpoint_s and step < recipe.steps:
                _save_checkpoint(partial, model, optimizer, gen, rng, step, history, key)
                saved_at = time.monotonic()
    finally:
        bar.close()


def _save_checkpoint(path: Path, model: ElasticCvT, optimizer: Any, gen: torch.Generator,
                     rng: np.random.Generator, step: int, history: list[dict[str, float]], key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "key": key, "step": step, "net": model.net.state_dict(),
                    "optimizer": optimizer.state_dict(), "generator": gen.get_state(),
                    "numpy": rng.bit_generator.state, "torch": torch.get_rng_state(), "history": history}, tmp)


def load_supernet(path: Path, *, members: MemberRange | None = None, expect_key: str | None = None) -> Supernet:
    """A supernet saved by :func:`train_supernet` (``UserError`` naming the file when it is not one, or when it was
    trained with other settings than ``expect_key`` says)."""
    path = Path(path)
    state = read_saved(path, FORMAT, "cvt-nas supernet")
    if expect_key is not None and state["key"] != expect_key:
        raise UserError(f"{path}: a supernet trained with other settings; delete it or choose another directory")
    try:
        covering = CvTConfig.from_dict(state["covering"])
        model = ElasticCvT(covering, state["num_classes"])
        model.net.load_state_dict(state["net"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"{path}: a damaged supernet ({type(err).__name__}); delete it to train again") from None
    recipe = SupernetRecipe(**state["recipe"])
    return Supernet(model.eval(), members, recipe, state["data"], state["history"], path)


def supernet_dir(members: MemberRange, dataset: Dataset, recipe: SupernetRecipe = CPU_RECIPE, *,
                 cache_dir: Path | None = None) -> Path:
    """Where the supernet for ``members``, ``dataset`` and ``recipe`` is cached (``cache_dir``, default
    ``$CVT_NAS_CACHE/supernets``, one directory per key); ``supernet.pt`` there once it is trained."""
    return _cache_root(cache_dir) / cache_key(members, _data_key(dataset, recipe), recipe)


def _cache_root(cache_dir: Path | None) -> Path:
    return Path(cache_dir or default_cache_dir() / "supernets")


def supernet_for(members: MemberRange, dataset: Dataset, recipe: SupernetRecipe = CPU_RECIPE, *,
                 cache_dir: Path | None = None, **train: Any) -> Supernet:
    """The supernet for ``members``, ``dataset`` and ``recipe``: from the cache when one was trained with the same
    space, range, data and recipe, else trained (resuming a killed training) and cached (``train``: the
    keywords of :func:`train_supernet`)."""
    directory = supernet_dir(members, dataset, recipe, cache_dir=cache_dir)
    return train_supernet(members, dataset, recipe, directory=directory, **train)


def cached_ranges(space: CvTSpace, dataset: Dataset, recipe: SupernetRecipe = CPU_RECIPE, *,
                  resolution: int | None = None, cache_dir: Path | None = None) -> list[MemberRange]:
    """The ranges of ``space`` for which a supernet trained on ``dataset`` with ``recipe`` is cached, narrowest
    first (a later search inside one of them reuses it)."""
    wanted = MemberRange(space, resolution=resolution).key()
    data, found = _data_key(dataset, recipe), []
    root = _cache_root(cache_dir)
    for about_file in sorted(root.glob(f"*/{ABOUT}")) if root.is_dir() else []:
        try:
            about = json.loads(about_file.read_text())
            span = dict(about["range"])
            low, high = float(span.pop("low")), span.pop("high")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged or foreign entry: it cannot be reused, so it is not offered
        same = (span == {k: v for k, v in wanted.items() if k not in ("low", "high")}
                and about.get("recipe") == recipe.to_dict() and about.get("data") == data)
        if same and (about_file.parent / "supernet.pt").is_file():
            found.append(MemberRange(space, low, math.inf if high is None else float(high), resolution))
    return sorted(found, key=lambda m: (m.high - m.low, m.low))


def recipe_named(name: str, device: str = "cpu") -> SupernetRecipe:
    """``cpu``, ``gpu``, ``auto`` (the GPU recipe when ``device`` is a GPU) or a YAML/JSON file of recipe fields."""
    if name == "auto":
        name = "gpu" if str(device).startswith("cuda") else "cpu"
    if name in RECIPES:
        return RECIPES[name]
    path = Path(name)
    if not path.is_file():
        raise UserError(f"supernet recipe {name!r}: use {', '.join(RECIPES)}, auto or a YAML file of recipe fields")
    import yaml

    try:
        fields = yaml.safe_load(path.read_text())
        return SupernetRecipe(**fields)
    except (yaml.YAMLError, TypeError) as err:
        known = ", ".join(SupernetRecipe.__dataclass_fields__)
        raise UserError(f"supernet recipe {path}: not a mapping of recipe fields ({known}): "
                        f"{str(err).splitlines()[0]}") from None


def choose_range(space: CvTSpace, dataset: Dataset, recipe: SupernetRecipe, *,
                 given: tuple[float, float] | None = None, macs_budget: float | None = None,
                 resolution: int | None = None, cache_dir: Path | None = None) -> MemberRange:
    """The members a search's supernet covers: ``given`` (GMACs), else the narrowest cached range that holds the
    MACs budget, else half the budget to the budget.

    Raises:
        UserError: a MACs budget outside the given range, or no MACs budget and no range given or cached.
    """
    if given is not None:
        members = MemberRange(space, given[0] * 1e9, given[1] * 1e9, resolution)
        if macs_budget is not None and not members.low <= macs_budget <= members.high:
            raise UserError(f"the MACs budget {macs_budget / 1e9:.3g} G lies outside the supernet's range "
                            f"{given[0]:g}-{given[1]:g} GMACs: give a --supernet-range that holds it")
        return members
    cached = cached_ranges(space, dataset, recipe, resolution=resolution, cache_dir=cache_dir)
    if macs_budget is None:
        if not cached:
            raise UserError("--estimator supernet without a MACs budget: give --supernet-range LOW,HIGH (GMACs) to "
                            "say which members to train a supernet for (a latency or params budget does not)")
        return max(cached, key=lambda m: (m.high - m.low, m.low))  # the widest serves the most budgets
    holding = [m for m in cached if m.low <= macs_budget <= m.high]
    return holding[0] if holding else MemberRange(space, macs_budget / 2, macs_budget, resolution)

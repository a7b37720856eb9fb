"""``SearchSpace``: the backend adapters, written once for every space.

A space is an ordered tuple of search dimensions (:mod:`search_spaces._params`), some conditional on an
earlier one (per-block choices exist only up to the sampled depth), plus two space-specific functions:
``_build(values) -> config`` and ``_values_of(config) -> values``. Everything else (Optuna define-by-run
sampling, the Ray Tune space, decoding, cardinality, feature vectors, extremes) is generic and lives here.

Dimensions with a single allowed value are not searched: they are the space's constants, filled in by
``decode`` and absent from ``sample`` / ``to_tune`` / ``encode``.
"""
from __future__ import annotations

import abc
import math
from typing import Any, Callable, Mapping

import numpy as np

from cvt import UserError

from ._params import Param

__all__ = ["SearchSpace"]


# MODEL.SPEC keys of both families that only matter for training.
_TRAINING_KEYS = frozenset({"ATTN_DROP_RATE", "DROP_RATE", "DROP_PATH_RATE"})


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


class SearchSpace(abc.ABC):
    """Base class of every search space.

    Subclasses set ``name`` and ``family`` (``"cvt"`` or ``"cct"``), call :meth:`_define` with their
    dimensions and constants, and implement :meth:`_build` and :meth:`_values_of`.

    Example:
        >>> import optuna
        >>> from search_spaces import get_space
        >>> space = get_space("cvt13-nas")
        >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        >>> config = space.decode(space.sample(study.ask()))
        >>> space.contains(config)
        True
    """

    name: str
    family: str

    # ------------------------------------------------------------------ what a subclass provides
    @abc.abstractmethod
    def _build(self, values: Mapping[str, Any]) -> Any:
        """Config from a complete assignment (active params and constants, canonical values)."""

    @abc.abstractmethod
    def _values_of(self, config: Any) -> dict[str, Any]:
        """The assignment (every name the config determines) that a member config was built from."""

    def _define(self, params: list[Param], constants: dict[str, Any]) -> None:
        """Set the dimensions (called once by the subclass's constructor) and check them.

        Names must be unique; a condition must refer to an earlier, unconditional dimension.
        """
        seen: dict[str, Param] = {}
        for p in params:
            if p.name in seen or p.name in constants:
                raise UserError(f"space {self.name!r}: dimension {p.name} is defined twice")
            if p.active_if is not None:
                parent = seen.get(p.active_if[0])
                if parent is None or parent.active_if is not None:
                    raise UserError(f"space {self.name!r}: {p.name} depends on {p.active_if[0]}, which must be "
                                    f"an earlier unconditional dimension")
            seen[p.name] = p
        object.__setattr__(self, "_params", tuple(params))  # subclasses are frozen dataclasses
        object.__setattr__(self, "_constants", dict(constants))

    @property
    def params(self) -> tuple[Param, ...]:
        """Every searched dimension, conditional ones included, in sampling order."""
        return self._params

    @property
    def constants(self) -> dict[str, Any]:
        """Dimensions fixed to one value (not searched), by flat name."""
        return dict(self._constants)

    def _differences(self, built: Any, config: Any) -> list[str]:
        """``MODEL.SPEC`` keys in which ``built`` (decoded) and ``config`` differ; training-only settings and
        the input (channels, size) are not architecture."""
        ours = built.replace(in_chans=config.in_chans, img_size=config.img_size).to_spec()
        theirs = config.to_spec()
        return sorted(k for k in set(ours) | set(theirs) if k not in _TRAINING_KEYS and ours.get(k) != theirs.get(k))

    # ------------------------------------------------------------------ define-by-run core
    @staticmethod
    def _active(p: Param, values: Mapping[str, Any]) -> bool:
        return p.active_if is None or values[p.active_if[0]] > p.active_if[1]

    def _walk(self, choose: Callable[[Param], Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for p in self.params:
            if self._active(p, values):
                values[p.name] = choose(p)
        return values

    # ------------------------------------------------------------------ backends
    def sample(self, trial: Any) -> dict[str, Any]:
        """Sample one architecture through an Optuna trial (define-by-run).

        Usable as Ray's ``OptunaSearch(space=space.sample)`` too (this module is importable, so Tune can
        pickle the bound method).

        Returns:
            The sampled parameters by flat name, e.g. ``{"stage2.block07.kv_stride": 1, ...}``.
        """
        return self._walk(lambda p: p.suggest(trial))

    def to_tune(self) -> dict[str, Any]:
        """A Ray Tune ``param_space`` with the same flat names.

        Plain Tune search algorithms cannot condition on a sampled depth, so every per-block dimension up
        to the largest depth is included; :meth:`decode` ignores the blocks a sampled depth leaves out.
        """
        return {p.name: p.to_tune() for p in self.params}

    def sample_params(self, seed: int | np.random.Generator | None = None) -> dict[str, Any]:
        """Uniform random parameters (each dimension uniform given the earlier ones), own RNG."""
        rng = _rng(seed)
        return self._walk(lambda p: p.sample(rng))

    def sample_config(self, seed: int | np.random.Generator | None = None) -> Any:
        """A random member config (see :meth:`sample_params`)."""
        return self.decode(self.sample_params(seed))

    # ------------------------------------------------------------------ decoding
    def decode(self, params: Mapping[str, Any], *, ignore_unknown: bool = False) -> Any:
        """The validated config of sampled parameters.

        Args:
            params: values by flat name (from :meth:`sample`, an Optuna ``trial.params``, or a Tune
                config). Per-block values beyond the sampled depth are ignored; constants may be given
                if they hold the space's value.
            ignore_unknown: accept names the space does not define (e.g. a Tune config that also
                carries training settings); by default they are an error, which catches typos.

        Raises:
            UserError: a value outside the space, a missing dimension, or an unknown name.
        """
        known = {p.name for p in self.params}
        unknown = [k for k in params if k not in known and k not in self.constants]
        if unknown and not ignore_unknown:
            raise UserError(f"space {self.name!r} has no dimension(s) {', '.join(sorted(unknown)[:5])}; "
                            f"known: {', '.join(p.name for p in self.params[:6])}, ...")
        for name, value in self.constants.items():
            if name in params and params[name] != value:
                raise UserError(f"{name} = {params[name]!r} is fixed to {value!r} in space {self.name!r}")

        def lookup(p: Param) -> Any:
            if p.name not in params:
                why = f" (needed because {p.active_if[0]} > {p.active_if[1]})" if p.active_if else ""
                raise UserError(f"space {self.name!r}: parameters lack {p.name}{why}")
            return p.canonical(params[p.name])

        return self._build({**self.constants, **self._walk(lookup)})

    def params_of(self, config: Any) -> dict[str, Any]:
        """The parameters that decode to ``config`` (inverse of :meth:`decode`).

        Raises:
            UserError: ``config`` is not a member of this space (the message names what differs).
        """
        values = self._values_of(config)
        for name, value in self.constants.items():
            if values.get(name) != value:
                raise UserError(f"not in space {self.name!r}: {name} is {values.get(name)!r}, "
                                f"the space fixes it to {value!r}")
        try:
            params = self._walk(lambda p: p.canonical(values[p.name]))
        except UserError as err:
            raise UserError(f"not in space {self.name!r}: {err}") from None
        # Anything the dimensions do not determine (paddings, strides of Q, ...) must match too.
        differences = self._differences(self.decode(params), config)
        if differences:
            raise UserError(f"not in space {self.name!r}: the config differs in {', '.join(differences)}")
        return params

    def contains(self, config: Any) -> bool:
        """Whether ``config`` is an architecture of this space (training-only settings ignored)."""
        try:
            self.params_of(config)
        except UserError:
            return False
        return True

    # ------------------------------------------------------------------ descriptions
    def cardinality(self) -> int:
        """Number of distinct architectures (per-block dimensions counted only up to each depth)."""
        total = 1
        children: dict[str, list[Param]] = {}
        for p in self.params:
            if p.active_if is not None:
                children.setdefault(p.active_if[0], []).append(p)
        for p in self.params:
            if p.active_if is not None:
                continue
            if p.name not in children:
                total *= p.cardinality
                continue
            total *= sum(math.prod(q.cardinality for q in children[p.name] if v > q.active_if[1])
                         for v in p.values)
        return total

    def feature_names(self) -> list[str]:
        """Names of the entries of :meth:`encode`'s vector."""
        return [p.name for p in self.params]

    def encode(self, config: Any) -> np.ndarray:
        """Flat float feature vector of a member config, one entry per dimension (0 where inactive).

        Numbers encode as their value, other choices as their position in the dimension's values.
        """
        params = self.params_of(config)
        return np.array([p.encode(params[p.name]) if p.name in params else 0.0 for p in self.params],
                        dtype=np.float64)

    def arch_id(self, config: Any) -> str:
        """Short stable id of an architecture (``config.arch_id()``)."""
        return config.arch_id()

    # ------------------------------------------------------------------ extremes
    def extremes(self, cost: Callable[[Any], float]) -> tuple[Any, Any]:
        """The cheapest and the dearest member by ``cost``, a function of a decoded config (e.g. its MACs).

        Coordinate-wise search: start from the first value of every dimension and move one dimension at
        a time to its best value until nothing improves. Exact for the built-in spaces, where MACs and
        params never decrease with depth, width, kernel or MLP ratio and never increase with a stride;
        for a user space where a dimension is not monotone it may return a local extreme.
        """
        return self._extreme(cost, 1), self._extreme(cost, -1)

    def _extreme(self, cost: Callable[[Any], int], sign: int) -> Any:
        # Assign every dimension (inactive blocks too) so a depth change brings valid block values along.
        full = {p.name: p.values[0] for p in self.params}
        best = sign * cost(self.decode(full))
        improved = True
        while improved:
            improved = False
            for p in self.params:
                for v in p.values:
                    if v == full[p.name]:
                        continue
                    trial = {**full, p.name: v}
                    c = sign * cost(self.decode(trial))
                    if c < best:
                        best, full, improved = c, trial, True
        return self.decode(full)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dimensions={len(self.params)})"

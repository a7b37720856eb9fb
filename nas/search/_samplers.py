"""``--sampler`` name -> an Optuna sampler, sized for small trial budgets (also used by the Ray backend)."""
from __future__ import annotations

import warnings

__all__ = ["make_sampler", "derive_seed", "keeps_values"]

# Samplers that fit their constraint model on COMPLETE trials only (Optuna 5's GPSampler): an over-budget
# sample must stay COMPLETE, with placeholder values, for them to learn the budget boundary. The others read
# the constraints of PRUNED trials (TPE ranks infeasible trials by violation whatever their state) or breed
# from COMPLETE ones, where a feasible trial beats any infeasible one (NSGA-II/III): for them over-budget samples
# end PRUNED and stay off the dashboards' Pareto plots.
_NEEDS_COMPLETE = ("gp",)


def keeps_values(sampler: str) -> bool:
    """Whether an over-budget sample is told COMPLETE with placeholder values (else PRUNED, no values)."""
    return sampler in _NEEDS_COMPLETE


def derive_seed(seed: int, *parts: int) -> int:
    """A 32-bit seed from the search seed and e.g. (worker index, trials already in the study).

    Workers must not share a seed (they would propose the same candidates), and a resumed study must
    not replay the random start-up proposals of the first session.
    """
    import numpy as np

    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


def make_sampler(name: str, seed: int, trials: int):
    """The sampler for ``name`` (one of :data:`nas.search._config.SAMPLERS`).

    ``trials`` (trainings asked for) sizes the random start-up phase and NSGA populations, so a
    10-trial search is not all start-up. Constraints come from ``trial.set_constraint``.
    """
    import optuna

    startup = max(4, min(10, trials // 2))
    population = max(8, min(50, trials // 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            # constant_liar: parallel workers do not all propose the same point while others train.
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True,
                                              constant_liar=True)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
        if name == "nsga3":
            return optuna.samplers.NSGAIIISampler(seed=seed, population_size=population)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    raise ValueError(f"unknown sampler {name!r}")

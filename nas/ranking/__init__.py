"""Ranking quality: the oracle (reference architectures trained long near a budget) and the metrics that
judge an accuracy estimator against it where a search decides (band tau, regret, top-k hit).

    from nas.ranking import OracleSpec, reference_architectures, kendall_tau
    refs = reference_architectures(OracleSpec(space="cvt", budget="4GFLOPs"))

Protocol and measured figures: ``docs/performance.md`` ("Ranking oracle").
"""
from ._fidelity import (EstimateStore, Fidelity, fidelity, fidelity_table, noise_ceiling, oracle_truth,
                        random_fidelity)
from ._metrics import common_finite, kendall_tau, regret, top_k_hit
from ._store import ResultStore
from ._oracle import (FORMAT, GPU_RECIPE, RECIPES, REFERENCE_RECIPE, OracleSpec, OracleStore, Reference, balanced_shard,
                      jobs, pending, reference_architectures, shard_jobs, train_reference)

__all__ = ["OracleSpec", "OracleStore", "Reference", "reference_architectures", "jobs",
           "shard_jobs", "balanced_shard", "pending", "train_reference", "REFERENCE_RECIPE", "GPU_RECIPE", "RECIPES",
           "FORMAT", "kendall_tau",
           "regret", "top_k_hit", "common_finite", "EstimateStore", "Fidelity", "fidelity", "noise_ceiling",
           "oracle_truth", "random_fidelity", "fidelity_table", "ResultStore"]

"""The cost model: MACs, parameters and latency of an architecture.

    from nas.cost import analytic_macs, analytic_params, measure_latency, LatencyPredictor
    analytic_macs(config, 224)           # closed form, = count_macs (fvcore) within 0.1%; what the search uses
    measure_latency(config, device="cpu", threads=1)        # the protocol; cached on disk
    LatencyPredictor.load("experiments/latency/cpu-cputime_cvt13-nas.json").predict(config)   # ms

FLOPs in this project are multiply-accumulates (the CvT paper's convention); see docs/performance.md.
"""
from . import _cct, _cvt  # noqa: F401  (each registers its family's cost model)
from ._analytic import analytic_macs, analytic_params, macs_breakdown
from ._count import CONVENTIONS, count_macs, count_params
from ._fit import shrink_to_fit
from ._latency import (DTYPES, LatencyResult, LatencySettings, check_device, device_available, device_signature,
                       measure_latency, normalize_device)
from ._predictor import LatencyPredictor, accuracy_report

__all__ = ["count_macs", "count_params", "CONVENTIONS", "analytic_macs", "analytic_params", "macs_breakdown",
           "measure_latency", "LatencyResult", "LatencySettings", "device_available", "check_device",
           "normalize_device", "device_signature", "LatencyPredictor", "accuracy_report", "DTYPES", "shrink_to_fit"]

"""Proxy training: estimate a candidate's accuracy by training it briefly, or score it without training.

    import cvt
    from nas.data import load_dataset
    from nas.proxy import ProxyConfig, train_proxy, zero_cost
    ds = load_dataset("auto")
    result = train_proxy(cvt.preset("cvt_13"), ds, ProxyConfig())   # ~1 min on 2 CPU cores
    zero_cost.score("naswot", cvt.preset("cvt_13"), ds)             # well under a second

Settings, defaults and measured fidelity: ``docs/performance.md`` ("Proxy training").
"""
from . import zero_cost
from ._config import GPU_DEFAULTS, ProxyConfig
from ._setup import normalize, proxy_model_config, scale_width
from ._rungs import GROWTHS, RungSchedule, train_rung
from ._train import ProxyResult, ReportFn, TrainingFailed, augment, train_proxy

__all__ = ["ProxyConfig", "ProxyResult", "TrainingFailed", "train_proxy", "ReportFn", "GPU_DEFAULTS",
           "proxy_model_config", "scale_width", "zero_cost", "RungSchedule", "GROWTHS", "train_rung", "augment",
           "normalize"]

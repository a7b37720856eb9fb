"""The cost model: MACs, parameters and latency of an architecture."""
from ._count import CONVENTIONS, count_macs, count_params

__all__ = ["count_macs", "count_params", "CONVENTIONS"]

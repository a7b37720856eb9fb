"""cvt-nas engine: cost model, proxy training, search backends and export.

Importing ``nas`` first chooses OpenMP's waiting behaviour (it must precede torch: ``_openmp``), then imports
``cvt``, which makes torchvision (and so timm) importable on CPU torch.
"""
from ._openmp import choose_wait_policy

choose_wait_policy()

import cvt  # noqa: E402, F401  (torchvision fix before anything imports timm)

__version__ = "0.1.0"

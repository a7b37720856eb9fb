"""cvt-nas engine: cost model, proxy training, search backends and export.

Importing ``nas`` imports ``cvt`` first, which makes torchvision (and so timm) importable on CPU torch.
"""
import cvt  # noqa: F401  (torchvision fix before anything imports timm)

__version__ = "0.1.0"

"""Make ``import torchvision`` (and so ``import timm``) work on CPU-only torch.

Every torchvision wheel on PyPI is linked against CUDA torch. On a CPU build of torch its compiled
extension fails to load, yet torchvision still registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` and dies with ``RuntimeError: operator torchvision::nms does not exist``.
Defining those two operator schemas ourselves lets the import finish; everything timm needs
(transforms, layers, data, optim) is pure Python. ``torchvision.ops.nms`` and ``torchvision.io``
decoding stay unavailable, which nothing in cvt-nas uses.

Where torchvision imports normally this module does nothing.
"""
from __future__ import annotations

import sys

_LIBRARY = None  # the torch.library fragment must outlive this call, or the schemas vanish


def ensure_torchvision() -> bool:
    """Import torchvision, patching missing operator schemas if needed.

    Returns:
        True if the patch was applied, False if torchvision imported as is (or is absent).
    """
    global _LIBRARY
    try:
        import torchvision  # noqa: F401
        return False
    except ImportError:
        return False
    except RuntimeError as err:
        if "torchvision::" not in str(err) or "does not exist" not in str(err):
            raise
    # Drop the half-imported modules so the second import starts clean.
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    import torch

    _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
    _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401,F811

    return True

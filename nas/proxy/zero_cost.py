"""Training-free scores: rank candidates at initialisation, from one batch, in well under a second.

* ``naswot``: Mellor et al., "Neural Architecture Search without Training", ICML 2021 (section 3). Each
  image gets a binary code (which units of every activation layer are active); the score is
  log|det K| with K[i, j] = number of units on which images i and j agree. Networks that separate
  images well at initialisation score high. For GELU-type activations "active" means input > 0.
* ``synflow``: Tanaka et al., "Pruning neural networks without any data by iteratively conserving
  synaptic flow", NeurIPS 2020, used as a NAS proxy by Abdelfattah et al., "Zero-Cost Proxies for
  Lightweight NAS", ICLR 2021: with all weights replaced by their absolute values and an all-ones
  input (float64), the sum over parameters of |theta * dR/dtheta|, R = sum of the outputs. Reported as
  log10 because it spans many orders of magnitude.
* ``grad_norm``: Abdelfattah et al. 2021: the sum over parameter tensors of the L2 norm of the
  cross-entropy gradient on one batch.
* ``dss``: Zhou et al., "Training-free Transformer Architecture Search", CVPR 2022 (TF-TAS, section 3): with
  weights made positive and an all-ones input, the sum of the outputs is backpropagated; linear layers of
  attention modules score ``||dR/dW||_nuc * ||W||_nuc`` (synaptic diversity), the other linear layers
  (MLP, head) ``sum |W * dR/dW|`` (synaptic saliency). Built for vision transformers.

Scores are only meaningful relative to each other within one search space; ``benchmarks/proxy_fidelity.py``
measures how well each agrees with trained accuracy.

Example:
    >>> import cvt
    >>> from nas.data import load_dataset
    >>> tiny = cvt.CvTConfig(depths=(1, 1, 1), embed_dims=(16, 32, 64), num_heads=(1, 2, 4))
    >>> isinstance(score("naswot", tiny, load_dataset("synthetic")), float)
    True
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from cvt import UserError
from cvt.cvt import QuickGELU

from ..data import Dataset
from ..devices import resolve_device
from ._config import ProxyConfig
from ._setup import build_proxy_model, normalize, seeded_run, select_data

__all__ = ["naswot", "synflow", "grad_norm", "dss", "score", "SCORES"]

_ACTIVATIONS = (nn.ReLU, nn.GELU, nn.SiLU, QuickGELU)


@torch.no_grad()
def naswot(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> float:
    """log|det K| of the activation-pattern kernel of a batch (labels unused)."""
    n = images.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64, device=images.device)

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        codes = (inputs[0].reshape(n, -1) > 0).double()
        kernel.add_(codes @ codes.T).add_((1 - codes) @ (1 - codes).T)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _ACTIVATIONS)]
    if not handles:
        raise UserError(f"naswot needs activation modules ({', '.join(a.__name__ for a in _ACTIVATIONS)}); "
                        f"{type(model).__name__} has none")
    # Fused inference kernels (CvT's oneDNN MLP) apply the activation without calling its module.
    fast = {m: m.fast_path for m in model.modules() if hasattr(m, "fast_path")}
    was_training = model.training
    model.train()  # batch statistics, as at the start of training
    try:
        for m in fast:
            m.fast_path = False
        model(images)
    finally:
        for handle in handles:
            handle.remove()
        for m, value in fast.items():
            m.fast_path = value
        model.train(was_training)
    if not kernel.any():
        raise RuntimeError(f"naswot saw no activation run in {type(model).__name__}'s forward pass")
    return float(torch.linalg.slogdet(kernel).logabsdet)


def _positive_probe(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """A float64 copy of ``model`` with every weight made positive, after backpropagating the sum of its outputs
    on one all-ones input of the images' shape (synflow's and DSS's setting). Eval mode: BatchNorm uses its
    initial running statistics."""
    probe = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in probe.parameters():
            p.abs_()
    probe.zero_grad(set_to_none=True)
    ones = torch.ones((1,) + tuple(images.shape[1:]), dtype=torch.float64, device=images.device)
    probe(ones).sum().backward()
    return probe


def synflow(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> float:
    """log10 of the synaptic flow (only the images' shape is used; the model is not modified)."""
    probe = _positive_probe(model, images)
    total = sum(float((p.detach() * p.grad).abs().sum()) for p in probe.parameters() if p.grad is not None)
    return math.log10(total) if total > 0 else float("-inf")


def grad_norm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Sum of per-tensor gradient L2 norms of the cross-entropy on one batch (gradients cleared after)."""
    was_training = model.training
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        F.cross_entropy(model(images), labels).backward()
        return float(sum(p.grad.norm() for p in model.parameters() if p.grad is not None))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def dss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> float:
    """TF-TAS's DSS-indicator (only the images' shape is used; the model is not modified)."""
    probe = _positive_probe(model, images)
    attention = {id(child) for m in probe.modules() if type(m).__name__.endswith("Attention")
                 for child in m.children()}
    total = 0.0
    for m in probe.modules():
        if not isinstance(m, nn.Linear) or m.weight.grad is None:
            continue
        w, g = m.weight.detach(), m.weight.grad
        if id(m) in attention:
            total += float(torch.linalg.matrix_norm(g, "nuc") * torch.linalg.matrix_norm(w, "nuc"))
        else:
            total += float((w * g).abs().sum())
    return math.log10(total) if total > 0 else float("-inf")


SCORES: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], float]] = {
    "naswot": naswot, "synflow": synflow, "grad_norm": grad_norm, "dss": dss}


def score(name: str, model_config: Any, dataset: Dataset, proxy: ProxyConfig | None = None, *,
          batch_size: int = 32) -> float:
    """Score a candidate at initialisation, built exactly as :func:`train_proxy` would build it.

    Args:
        name: one of :data:`SCORES` (``naswot``, ``synflow``, ``grad_norm``).
        model_config: a model config (or an ``nn.Module``), as for ``train_proxy``.
        dataset: the data; one seeded batch of its training images at ``proxy.resolution`` is used.
        proxy: resolution, classes, width multiplier, seed, device and threads; defaults to ``ProxyConfig()``.
        batch_size: images in the batch (NASWOT's kernel is batch_size x batch_size).

    Returns:
        The score; higher is meant to predict higher accuracy.
    """
    if name not in SCORES:
        raise UserError(f"unknown training-free score {name!r}; use one of {', '.join(SCORES)}")
    proxy = proxy or ProxyConfig()
    device = resolve_device(proxy.device, "proxy device")
    data = select_data(dataset, proxy, subsets=False)
    with seeded_run(proxy, device):
        model = build_proxy_model(model_config, data, proxy).to(device)
        gen = torch.Generator().manual_seed(proxy.seed)
        idx = torch.randperm(len(data.train_y), generator=gen)[:batch_size]
        images = normalize(data.train_x[idx].to(device), data)
        return SCORES[name](model, images, data.train_y[idx].to(device))

"""A weight-sharing CvT: one set of weights, the largest member's, from which every member of a space takes its own.

The supernet holds a plain :class:`cvt.CvT` of the *covering* config (every stage at its deepest and widest, with
its largest kernels and MLPs). A member of the space uses

- the first ``depth`` blocks of each stage (AutoFormer's depth rule);
- the first ``C`` channels of every width: conv embeddings, LayerNorms, Q/K/V and output projections, the
  BatchNorm of each convolutional projection with its statistics (AutoFormer's weight entanglement);
- the first ``int(C * mlp_ratio)`` hidden units of each MLP;
- the centre ``k x k`` of every convolution kernel (Once-for-All's elastic kernel, without its learned transform);
- any head count that divides ``C``, any K/V, Q or patch stride: the same weights, split or strided differently.

So a member's weights are a function of the shapes of its own parameters alone (:meth:`ElasticCvT.member_state`).
The supernet's forward in a member's configuration runs the plain CvT code over those slices (a parameter-free
skeleton of the member on the meta device, through ``torch.func.functional_call``), and :meth:`ElasticCvT.extract`
loads copies of the same slices into a real CvT: the two agree by construction, and nothing of the supernet enters
the model classes or what is exported.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Iterable

import torch
from torch import nn
from torch.func import functional_call

from cvt import CvT, CvTConfig, UserError
from search_spaces import CvTSpace

__all__ = ["ElasticCvT", "covering_config"]

_SKELETONS = 64  # member skeletons kept (meta-device modules: no memory for weights, only module objects)
_BLOCK = re.compile(r"^stage(\d+)\.blocks\.(\d+)\.")


def _largest(values: Iterable[Any]) -> Any:
    """The value of one dimension whose weights hold every other value's."""
    values = tuple(values)
    if all(isinstance(v, bool) for v in values):
        return True in values  # a cls token: its parameter serves the members that use it
    if all(isinstance(v, (int, float)) for v in values):
        return max(values)
    return "dw_bn" if "dw_bn" in values else values[0]  # projection methods: only dw_bn has weights


def covering_config(space: CvTSpace) -> CvTConfig:
    """The smallest CvT whose weights contain every member of ``space``: each dimension at its largest value
    (strides and head counts do not change a weight's shape, so any of their values serves)."""
    if not isinstance(space, CvTSpace):
        raise UserError(f"a CvT supernet covers CvT spaces; {space.name!r} is a {space.family} space")
    return space.decode({p.name: _largest(p.values) for p in space.params})


def _slice(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The leading ``shape`` of ``tensor``, but the centre of a convolution kernel (dims 2 and 3 of a 4-D weight)."""
    index = []
    for dim, (big, small) in enumerate(zip(tensor.shape, shape)):
        start = (big - small) // 2 if tensor.dim() == 4 and dim >= 2 else 0
        index.append(slice(start, start + small))
    return tensor[tuple(index)]


class ElasticCvT(nn.Module):
    """The supernet of a CvT space: a plain CvT of the covering config whose slices are every member.

    Args:
        covering: the largest architecture (see :func:`covering_config`); members must fit inside it.
        num_classes: classifier width, shared by every member.

    Example:
        >>> from search_spaces import get_space
        >>> space = get_space("cvt13-nas")
        >>> supernet = ElasticCvT(covering_config(space), num_classes=10)
        >>> member = space.sample_config(0).replace(img_size=32)
        >>> supernet(torch.zeros(2, 3, 32, 32), member).shape
        torch.Size([2, 10])
    """

    def __init__(self, covering: CvTConfig, num_classes: int):
        super().__init__()
        self.covering = covering
        self.num_classes = num_classes
        self.net = CvT(covering, num_classes)
        self._skeletons: OrderedDict[CvTConfig, CvT] = OrderedDict()

    @classmethod
    def for_space(cls, space: CvTSpace, num_classes: int) -> "ElasticCvT":
        return cls(covering_config(space), num_classes)

    # ------------------------------------------------------------------ members
    def _skeleton(self, config: CvTConfig) -> CvT:
        """The member's module tree without weights (meta device), checked against the supernet once."""
        skeleton = self._skeletons.get(config)
        if skeleton is None:
            with torch.device("meta"):
                skeleton = CvT(config, self.num_classes)
            self._check(config, skeleton)
            self._skeletons[config] = skeleton
            if len(self._skeletons) > _SKELETONS:
                self._skeletons.popitem(last=False)
        else:
            self._skeletons.move_to_end(config)
        return skeleton

    def _check(self, config: CvTConfig, skeleton: CvT) -> None:
        def uncovered(why: str) -> UserError:
            return UserError(f"the supernet does not cover this architecture: {why}; train a supernet for a space "
                             f"that contains it")

        if not isinstance(config, CvTConfig):
            raise UserError(f"a CvT supernet runs CvT configs, not {type(config).__name__}")
        for name in ("in_chans", "act_layer", "num_stages"):
            if getattr(config, name) != getattr(self.covering, name):
                raise uncovered(f"{name} is {getattr(config, name)!r}, the supernet's is "
                                f"{getattr(self.covering, name)!r}")
        own = self.net.state_dict()
        for name, tensor in skeleton.state_dict().items():
            big = own.get(name)
            if big is None:
                block = _BLOCK.match(name)
                if block and f"stage{block[1]}.blocks.{block[2]}.norm1.weight" not in own:
                    stage = int(block[1])
                    raise uncovered(f"stage {stage} has {config.depths[stage]} blocks, the supernet at most "
                                    f"{self.covering.depths[stage]}")
                raise uncovered(f"it has {name}, which the supernet lacks")
            if big.dim() != tensor.dim() or any(s > b for s, b in zip(tensor.shape, big.shape)):
                raise uncovered(f"{name} has shape {tuple(tensor.shape)}, the supernet's {tuple(big.shape)}")
            if big.dim() == 4 and any((b - s) % 2 for s, b in zip(tensor.shape[2:], big.shape[2:])):
                raise uncovered(f"{name}'s {tensor.shape[-1]}x{tensor.shape[-1]} kernel has no centre in the "
                                f"supernet's {big.shape[-1]}x{big.shape[-1]}")

    def covers(self, config: CvTConfig) -> bool:
        try:
            self._skeleton(config)
        except UserError:
            return False
        return True

    def member_state(self, config: CvTConfig) -> dict[str, torch.Tensor]:
        """The member's parameters and buffers as slices of the supernet's: gradients and BatchNorm statistic
        updates reach the shared tensors."""
        own = dict(self.net.named_parameters())
        own.update(self.net.named_buffers())
        return {name: _slice(own[name], meta.shape).contiguous()  # a copy only where the slice is strided
                for name, meta in self._skeleton(config).state_dict(keep_vars=True).items()}

    def forward(self, x: torch.Tensor, config: CvTConfig | None = None) -> torch.Tensor:
        """Logits of the member ``config`` (the covering architecture when None)."""
        if config is None:
            return self.net(x)
        skeleton = self._skeleton(config)
        skeleton.train(self.training)
        return functional_call(skeleton, self.member_state(config), (x,), strict=True)

    @torch.no_grad()
    def recalibrate(self, config: CvTConfig, batches: Iterable[torch.Tensor]) -> None:
        """Re-estimate the member's BatchNorm statistics as the plain average over ``batches`` (Once-for-All's
        recalibration): members share statistics as they share weights, and a slice of statistics gathered
        under other members does not describe this one. Nothing else changes; evaluate the member next."""
        skeleton = self._skeleton(config)
        norms = {name: m for name, m in skeleton.named_modules() if isinstance(m, nn.BatchNorm2d)}
        if not norms:
            return
        state = self.member_state(config)
        for name in norms:
            state[f"{name}.running_mean"].zero_()
            state[f"{name}.running_var"].fill_(1.0)
            state[f"{name}.num_batches_tracked"].zero_()
        momenta = {name: m.momentum for name, m in norms.items()}
        skeleton.eval()  # dropout and drop-path off; only the BatchNorms gather statistics
        for m in norms.values():
            m.train()
            m.momentum = None  # a cumulative average over the batches, not an exponential one
        try:
            for x in batches:
                functional_call(skeleton, state, (x,), strict=True)
        finally:
            for name, m in norms.items():
                m.momentum = momenta[name]

    def extract(self, config: CvTConfig) -> CvT:
        """A plain CvT of ``config`` with the member's weights (copies): its logits equal the supernet's in
        that configuration, and it knows nothing of the supernet."""
        model = CvT(config, self.num_classes)
        model.load_state_dict({k: v.detach().clone() for k, v in self.member_state(config).items()})
        return model.train(self.training)

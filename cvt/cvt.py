"""CvT: Convolutional vision Transformer.

Wu et al., "CvT: Introducing Convolutions to Vision Transformers", ICCV 2021 (arXiv 2103.15808).

A three-stage pyramid (section 3). Each stage starts with a *convolutional token embedding* (3.1), a
strided convolution followed by LayerNorm, and stacks *convolutional transformer blocks* whose Q, K and V
come from a *convolutional projection* (3.2): depth-wise conv + BatchNorm, then a linear layer. A K/V
stride of 2 shrinks the keys and values 4x (the "squeezed" projection). No position embedding is used.

This module matches the authors' code (microsoft/CvT ``cls_cvt.py``) number for number, including its
quirks: QuickGELU, an attention scale of ``dim ** -0.5`` with ``dim`` the full stage width, and a cls
token that bypasses the convolutional projection. Its ``state_dict`` uses the reference key names, so the
authors' checkpoints load with ``strict=True``; Hugging Face transformers' CvT checkpoints are remapped by
:meth:`CvT.checkpoint_filter`. Unlike both, every block can have its own heads, MLP ratio and strides,
which is what the architecture search (CvT-13-NAS, section 4.2) needs.

Speed (same numbers to fp32 rounding; measurements in ``docs/performance.md``): tokens stay
channels-last, so the (B, H*W, C) sequence and the (B, C, H, W) image the convolutions read are the same
memory, never transposed copies; attention runs in ``scaled_dot_product_attention``. The *fast path*
adds: BatchNorm folded into its depth-wise conv at eval; channels-last embedding weights; on CPU, plain
matmul attention where the keys are few; on fp32 CPU, linear layers through oneDNN (in training too), with
the MLP activation fused in at inference, and inference batches run in cache-sized slices that share one
set of folded weights. :meth:`CvT.set_fast_path` turns it off, leaving plain PyTorch ops.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from ._config import BlockSpec, CvTConfig
from ._errors import ConfigError
from ._family import Family
from ._layers import DropPath, QuickGELU, act_layer

__all__ = ["CvT", "QuickGELU", "DropPath", "act_layer", "Linear", "ConvEmbed", "ConvProjection", "ConvAttention",
           "Mlp", "CvTBlock", "CvTStage", "FAMILY"]

# Measured effects of the CPU paths below: docs/performance.md, "CvT model speed".
# oneDNN's linear(+activation) kernel, the one torch.compile's CPU backend emits. On fp32 CPU it beats the
# BLAS path of F.linear, which also spends a pass copying the bias into the output (most for the 64-wide
# layers of stage 0).
_HAS_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# A weight packed into oneDNN's blocked layout (as torch.compile's freezing does) makes a linear layer faster
# than the plain layout, but packing costs a pass over the weights: batched inference packs once per call,
# for all its slices.
_HAS_WEIGHT_PACKING = _HAS_ONEDNN_LINEAR and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
# CPU inference runs batches in slices of about this many stage-0 tokens (8 images at 224x224): a slice's
# activations stay in the caches instead of streaming through memory.
_CPU_SLICE_TOKENS = 8 * 56 * 56
# On CPU, two plain matmuls beat the fused attention kernel when there are few keys (CvT-13's 50 in stage 2
# at 224); the fused kernel wins by far on long key sequences (stage 1's 196, stage 0's 784).
_CPU_SHORT_KEYS = 64


def _use_onednn(x: torch.Tensor) -> bool:
    """fp32 CPU tensors, not traced (fvcore), compiled or autocast: there oneDNN replaces ``F.linear``."""
    return (_HAS_ONEDNN_LINEAR and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
            and not torch.is_autocast_enabled("cpu"))


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   act: str = "none", algorithm: str = "") -> torch.Tensor:
    """x @ weight.T + bias, then ``act`` ("none", "gelu" with algorithm "none", "swish"), in one kernel."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, act, [], algorithm)


def _packed(weight: torch.Tensor, pack: bool) -> torch.Tensor:
    """A linear weight in oneDNN's blocked layout where oneDNN will run it (fp32 CPU), else unchanged."""
    if pack and _HAS_WEIGHT_PACKING and weight.device.type == "cpu" and weight.dtype == torch.float32:
        return torch.ops.mkldnn._reorder_linear_weight(weight)
    return weight


def _shared_folded(module: nn.Module) -> tuple[torch.Tensor | None, ...] | None:
    """The eval-time weights made once for all slices of the running inference call, if any."""
    return module.folded if not torch.is_grad_enabled() else None


class _OneDNNLinear(torch.autograd.Function):
    """A linear layer on oneDNN: its forward, and in the backward the input gradient (a linear layer with the
    transposed weight: 5-30% faster than ``mm`` for CvT-13's layers); the weight gradient stays ``mm``,
    which is faster there, and the bias gradient a sum."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad2d = grad.reshape(-1, grad.shape[-1])
        grad_x = None
        if ctx.needs_input_grad[0]:
            if torch.is_grad_enabled():  # create_graph: differentiable ops, for higher-order gradients
                grad_x = (grad2d @ weight).view(x.shape)
            else:
                grad_x = _onednn_linear(grad2d.contiguous(), weight.t().contiguous(), None).view(x.shape)
        grad_w = grad2d.t() @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        grad_b = grad2d.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class Linear(nn.Linear):
    """``nn.Linear`` that runs on oneDNN for fp32 CPU tensors (same parameters, same numbers)."""

    fast_path: bool = True
    folded: tuple[torch.Tensor, torch.Tensor | None] | None = None  # fold()'s result during one inference call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast_path and _use_onednn(x):
            folded = _shared_folded(self)
            if folded is not None:
                return _onednn_linear(x, *folded)
            return _OneDNNLinear.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)

    def fold(self, pack: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight (packed for oneDNN if ``pack``) and the bias."""
        return _packed(self.weight, pack), self.bias


def _tokens_to_grid(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """B, H*W, C -> B, C, H, W as a view: row-major tokens are a channels-last image."""
    return tokens.reshape(tokens.shape[0], h, w, -1).permute(0, 3, 1, 2)


class ConvEmbed(nn.Module):
    """Convolutional token embedding (section 3.1): strided conv, then LayerNorm over channels."""

    fast_path: bool = True

    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel, stride, padding)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        # Channels-last in, channels-last out: the conv output already is the token sequence in memory.
        x = x.contiguous(memory_format=torch.channels_last)
        if self.fast_path:  # a channels-last weight too: faster for the 3-channel stem conv on CPU
            proj = self.proj
            x = F.conv2d(x, proj.weight.contiguous(memory_format=torch.channels_last), proj.bias,
                         proj.stride, proj.padding)
        else:
            x = self.proj(x)  # B, C, H, W
        _, _, h, w = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), h, w  # B, H*W, C


class ConvProjection(nn.Module):
    """Depth-wise conv + BatchNorm of one of Q, K, V (section 3.2, method ``dw_bn``)."""

    fast_path: bool = True
    folded: tuple[torch.Tensor, torch.Tensor] | None = None  # fold()'s result during one inference call

    def __init__(self, dim: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel, stride, padding, groups=dim, bias=False)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.fast_path:
            return self.bn(self.conv(x))
        conv = self.conv
        weight, bias = _shared_folded(self) or self.fold()
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    def fold(self, pack: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv weight and bias with the eval BatchNorm folded in: a per-channel affine map, it then costs
        no pass of its own. (``pack`` is for linear layers; a conv has nothing to pack.)"""
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return self.conv.weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def _projection(method: str, dim: int, kernel: int, stride: int, padding: int) -> nn.Module | None:
    if method == "dw_bn":
        return ConvProjection(dim, kernel, stride, padding)
    if method == "avg":
        return nn.AvgPool2d(kernel, stride, padding, ceil_mode=True)
    return None  # "linear": tokens go straight to the linear projection


class ConvAttention(nn.Module):
    """Multi-head attention over convolutionally projected Q, K, V.

    The cls token (if any) is split off before the convolution and put back in front of each of Q, K and
    V before their linear projections, so it attends and is attended to but is never convolved.
    """

    fused: bool = True  # torch's scaled_dot_product_attention; False runs the explicit softmax path
    fast_path: bool = True  # the explicit path for few keys on CPU, where it is faster

    def __init__(self, spec: BlockSpec):
        super().__init__()
        dim = spec.dim
        self.num_heads = spec.num_heads
        self.with_cls_token = spec.with_cls_token
        # The reference scales by the full width, not the head width; kept for checkpoint parity.
        self.scale = dim ** -0.5
        method = spec.proj_method
        self.conv_proj_q = _projection("linear" if method == "avg" else method, dim, spec.kernel_qkv,
                                       spec.stride_q, spec.padding_q)
        self.conv_proj_k = _projection(method, dim, spec.kernel_qkv, spec.stride_kv, spec.padding_kv)
        self.conv_proj_v = _projection(method, dim, spec.kernel_qkv, spec.stride_kv, spec.padding_kv)
        self.shared_kv_input = method != "dw_bn"  # parameter-free K/V projections give the same tokens
        self.proj_q = Linear(dim, dim, bias=spec.qkv_bias)
        self.proj_k = Linear(dim, dim, bias=spec.qkv_bias)
        self.proj_v = Linear(dim, dim, bias=spec.qkv_bias)
        self.attn_drop = spec.attn_drop
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(spec.drop)

    @staticmethod
    def _project(conv: nn.Module | None, x: torch.Tensor, grid: torch.Tensor | None,
                 cls: torch.Tensor | None) -> torch.Tensor:
        """Tokens of one of Q, K, V before its linear layer: the conv-projected grid, cls in front."""
        if conv is None:
            return x  # "linear": the tokens as they are, cls included
        tokens = conv(grid).flatten(2).transpose(1, 2)  # channels-last conv output: a view
        return tokens if cls is None else torch.cat((cls, tokens), dim=1)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        # split, not two slices: its backward is one cat, where each slice's would zero-fill a full-size tensor
        cls, tokens = x.split((1, n - 1), dim=1) if self.with_cls_token else (None, x)
        # The convolutions read the tokens as a channels-last image, made contiguous once for all three (a
        # copy only when a cls token sits in front); "linear" projects the tokens as they are.
        grid = None
        if self.conv_proj_k is not None:
            grid = _tokens_to_grid(tokens, h, w).contiguous(memory_format=torch.channels_last)
        q = self.proj_q(self._project(self.conv_proj_q, x, grid, cls))
        kv_in = self._project(self.conv_proj_k, x, grid, cls)
        k = self.proj_k(kv_in)
        v = self.proj_v(kv_in if self.shared_kv_input else self._project(self.conv_proj_v, x, grid, cls))
        # B, T, C -> B, heads, T, C/heads
        q, k, v = (t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for t in (q, k, v))
        drop = self.attn_drop if self.training else 0.0
        if self.fused and not (self.fast_path and q.device.type == "cpu" and k.shape[-2] <= _CPU_SHORT_KEYS):
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, scale=self.scale)
        else:
            attn = (q @ k.transpose(-2, -1)).mul_(self.scale).softmax(dim=-1)
            out = F.dropout(attn, drop, self.training) @ v
        out = out.transpose(1, 2).reshape(b, -1, c)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """fc1 -> activation -> dropout -> fc2 -> dropout."""

    fast_path: bool = True
    folded: tuple[torch.Tensor, ...] | None = None  # fold()'s result during one inference call

    def __init__(self, dim: int, hidden: int, act_layer: type[nn.Module], drop: float):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = act_layer()
        self.fc2 = Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast_path and not (self.training or torch.is_grad_enabled()) and _use_onednn(x):
            return self._forward_fused(x)
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """Inference with the activation fused into fc1's kernel (dropout is the identity there)."""
        w1, b1, w2, b2 = _shared_folded(self) or self.fold()
        if isinstance(self.act, QuickGELU):
            hidden = _onednn_linear(x, w1, b1, "swish")
        elif isinstance(self.act, nn.GELU) and self.act.approximate == "none":
            hidden = _onednn_linear(x, w1, b1, "gelu", "none")
        else:
            hidden = self.act(_onednn_linear(x, w1, b1))
        return _onednn_linear(hidden, w2, b2)

    def fold(self, pack: bool = False) -> tuple[torch.Tensor, ...]:
        """fc1's and fc2's weights (packed for oneDNN if ``pack``) and biases for the fused kernels.

        QuickGELU is x * sigmoid(a x) = silu(a x) / a: fc1 scaled by a feeds oneDNN's fused silu ("swish"),
        and fc2 takes the 1 / a.
        """
        fc1, fc2 = self.fc1, self.fc2
        if isinstance(self.act, QuickGELU):
            a = self.act.alpha
            return _packed(fc1.weight * a, pack), fc1.bias * a, _packed(fc2.weight * (1.0 / a), pack), fc2.bias
        return _packed(fc1.weight, pack), fc1.bias, _packed(fc2.weight, pack), fc2.bias


class CvTBlock(nn.Module):
    """Convolutional transformer block, pre-norm: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, spec: BlockSpec, act_layer: type[nn.Module]):
        super().__init__()
        self.norm1 = nn.LayerNorm(spec.dim)
        self.attn = ConvAttention(spec)
        self.drop_path = DropPath(spec.drop_path)
        self.norm2 = nn.LayerNorm(spec.dim)
        self.mlp = Mlp(spec.dim, int(spec.dim * spec.mlp_ratio), act_layer, spec.drop)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.drop_path(x, self.attn(self.norm1(x), h, w))
        return self.drop_path(x, self.mlp(self.norm2(x)))


class CvTStage(nn.Module):
    """Conv token embedding, optional cls token, and the stage's blocks."""

    def __init__(self, config: CvTConfig, stage: int, in_chans: int, act_layer: type[nn.Module]):
        super().__init__()
        i = stage
        self.patch_embed = ConvEmbed(in_chans, config.embed_dims[i], config.patch_size[i],
                                     config.patch_stride[i], config.patch_padding[i])
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.embed_dims[i])) if config.cls_token[i] else None
        self.pos_drop = nn.Dropout(config.drop_rate[i])
        self.blocks = nn.ModuleList(CvTBlock(spec, act_layer) for spec in config.blocks(i))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """B, C_in, H, W -> (B, C, H', W') channels-last feature map and the (B, 1, C) cls token or None."""
        x, h, w = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.pos_drop(x)
        for block in self.blocks:
            x = block(x, h, w)
        cls = None
        if self.cls_token is not None:
            cls, x = x.split((1, x.shape[1] - 1), dim=1)
        return _tokens_to_grid(x, h, w), cls


class CvT(nn.Module):
    """Convolutional vision Transformer.

    Args:
        config: the architecture; defaults to CvT-13.
        num_classes: classifier width; 0 returns pooled features.

    Example:
        >>> model = CvT(CvTConfig(), num_classes=10)
        >>> model(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    fast_path: bool = True

    def __init__(self, config: CvTConfig | None = None, num_classes: int = 1000):
        super().__init__()
        self.config = config = config or CvTConfig()
        if not isinstance(config, CvTConfig):
            raise ConfigError(f"CvT needs a CvTConfig, got {type(config).__name__}")
        self.num_classes = num_classes
        act = act_layer(config.act_layer)
        in_chans = config.in_chans
        for i in range(config.num_stages):
            # Named stage0, stage1, ... as in the reference state_dict.
            self.add_module(f"stage{i}", CvTStage(config, i, in_chans, act))
            in_chans = config.embed_dims[i]
        self.num_features = config.embed_dims[-1]
        self.norm = nn.LayerNorm(self.num_features)
        self.head = Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    @property
    def stages(self) -> list[CvTStage]:
        return [getattr(self, f"stage{i}") for i in range(self.config.num_stages)]

    def _init_weights(self) -> None:
        # Reference init: linear trunc-normal(0.02) or xavier, norms 1/0, convs keep PyTorch's default.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                if self.config.init == "xavier":
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for stage in self.stages:
            if stage.cls_token is not None:
                nn.init.trunc_normal_(stage.cls_token, std=0.02)

    def set_fused_attention(self, enabled: bool) -> "CvT":
        """Switch every block between SDPA and the explicit softmax path (same numbers)."""
        for m in self.modules():
            if isinstance(m, ConvAttention):
                m.fused = enabled
        return self

    def set_fast_path(self, enabled: bool) -> "CvT":
        """Switch the fast path (BatchNorm folding at eval; on fp32 CPU: oneDNN linears, inference slices).

        Off, the model runs plain PyTorch ops; outputs and gradients agree to fp32 rounding either way.
        """
        for m in self.modules():
            if isinstance(m, (CvT, Linear, ConvEmbed, ConvProjection, ConvAttention, Mlp)):
                m.fast_path = enabled
        return self

    def _slice_size(self, x: torch.Tensor) -> int:
        """Images per slice of a CPU inference batch (the whole batch elsewhere)."""
        if self.training or torch.is_grad_enabled() or not self.fast_path or x.device.type != "cpu":
            return x.shape[0]
        stride = self.config.patch_stride[0]
        return max(1, _CPU_SLICE_TOKENS // max(1, (x.shape[-2] // stride) * (x.shape[-1] // stride)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """B, C, H, W -> B, num_features (normalised cls token, or mean of normalised tokens)."""
        size = self._slice_size(x)
        if size >= x.shape[0]:
            return self._forward_features(x)
        # Every op is per image at eval, so slices change nothing but speed. They share one set of eval-time
        # weights, BatchNorm folded into its conv and linear weights packed for oneDNN: packing pays off
        # only for weights that serve several slices (per call, it slows batch-1 inference down).
        modules = [m for stage in self.stages for m in stage.modules()]
        in_mlp = {layer for m in modules if isinstance(m, Mlp) for layer in (m.fc1, m.fc2)}  # Mlp folds those
        folding = [m for m in modules if isinstance(m, (Linear, ConvProjection, Mlp)) and m not in in_mlp]
        for m in folding:
            m.folded = m.fold(pack=True)
        try:
            return torch.cat([self._forward_features(part) for part in x.split(size)])
        finally:
            for m in folding:
                m.folded = None

    def _forward_features(self, x: torch.Tensor) -> torch.Tensor:
        cls = None
        for stage in self.stages:
            x, cls = stage(x)
        if cls is not None:
            return self.norm(cls[:, 0])
        return self.norm(x.flatten(2).transpose(1, 2)).mean(dim=1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    def checkpoint_filter(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map foreign key names to ours (reference checkpoints pass through unchanged)."""
        if not any(k.startswith("cvt.encoder.") for k in state_dict):
            return state_dict
        return _from_hf_transformers(state_dict)


# ---------------------------------------------------------------------------- checkpoint conversion

# Hugging Face transformers' CvtForImageClassification names -> reference names (one to one).
_HF_BLOCK_NAMES = (
    ("attention.attention.convolution_projection_query.convolution_projection.convolution", "attn.conv_proj_q.conv"),
    ("attention.attention.convolution_projection_query.convolution_projection.normalization", "attn.conv_proj_q.bn"),
    ("attention.attention.convolution_projection_key.convolution_projection.convolution", "attn.conv_proj_k.conv"),
    ("attention.attention.convolution_projection_key.convolution_projection.normalization", "attn.conv_proj_k.bn"),
    ("attention.attention.convolution_projection_value.convolution_projection.convolution", "attn.conv_proj_v.conv"),
    ("attention.attention.convolution_projection_value.convolution_projection.normalization", "attn.conv_proj_v.bn"),
    ("attention.attention.projection_query", "attn.proj_q"),
    ("attention.attention.projection_key", "attn.proj_k"),
    ("attention.attention.projection_value", "attn.proj_v"),
    ("attention.output.dense", "attn.proj"),
    ("layernorm_before", "norm1"),
    ("layernorm_after", "norm2"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
)


def _from_hf_transformers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        new = key
        if key.startswith("cvt.encoder.stages."):
            stage, rest = key[len("cvt.encoder.stages."):].split(".", 1)
            if rest.startswith("embedding.convolution_embeddings.projection."):
                rest = "patch_embed.proj." + rest.rsplit(".", 1)[1]
            elif rest.startswith("embedding.convolution_embeddings.normalization."):
                rest = "patch_embed.norm." + rest.rsplit(".", 1)[1]
            elif rest.startswith("layers."):
                index, inner = rest[len("layers."):].split(".", 1)
                for hf, ours in _HF_BLOCK_NAMES:
                    if inner.startswith(hf + "."):
                        inner = ours + inner[len(hf):]
                        break
                rest = f"blocks.{index}.{inner}"
            new = f"stage{stage}.{rest}"
        elif key.startswith("layernorm."):
            new = "norm." + key[len("layernorm."):]
        elif key.startswith("classifier."):
            new = "head." + key[len("classifier."):]
        out[new] = value
    return out


# ---------------------------------------------------------------------------- presets and timm

def _preset(depths, embed_dims=(64, 192, 384), num_heads=(1, 3, 6), drop_path=0.1, img_size=224) -> CvTConfig:
    return CvTConfig(depths=depths, embed_dims=embed_dims, num_heads=num_heads,
                     drop_path_rate=(0.0, 0.0, drop_path), img_size=img_size)


PRESETS: dict[str, CvTConfig] = {
    "cvt_13": _preset((1, 2, 10)),
    "cvt_13_384": _preset((1, 2, 10), img_size=384),
    "cvt_21": _preset((1, 4, 16)),
    "cvt_21_384": _preset((1, 4, 16), img_size=384),
    "cvt_w24": _preset((2, 2, 20), (192, 768, 1024), (3, 12, 16), drop_path=0.3),
    "cvt_w24_384": _preset((2, 2, 20), (192, 768, 1024), (3, 12, 16), drop_path=0.3, img_size=384),
}


def _cfg(config: CvTConfig) -> dict:
    size = config.img_size
    return {
        "url": "", "num_classes": 1000, "input_size": (3, size, size), "pool_size": None,
        "crop_pct": 0.875 if size == 224 else 1.0, "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
        "first_conv": "stage0.patch_embed.proj", "classifier": "head",
    }


default_cfgs = generate_default_cfgs({name: _cfg(config) for name, config in PRESETS.items()})

FAMILY = Family(name="cvt", config_cls=CvTConfig, model_cls=CvT, presets=PRESETS, yaml_name="cls_cvt",
                timm_name="cvt_13")


def _create_cvt(variant: str, pretrained: bool = False, **kwargs) -> CvT:
    """Build a preset, or any architecture given as ``config=`` (a CvTConfig or a YAML path)."""

    config = kwargs.pop("config", None)
    if isinstance(config, (str, Path)):
        config = CvTConfig.from_yaml(config)
    config = config or PRESETS[variant]
    if "in_chans" in kwargs:
        config = config.replace(in_chans=kwargs.pop("in_chans"))
    if "drop_path_rate" in kwargs:  # timm's single rate applies to the last stage, where the presets set it
        config = config.replace(drop_path_rate=config.drop_path_rate[:-1] + (kwargs.pop("drop_path_rate"),))
    # in_chans lives in the config; timm's builder would pass its default again, so filter it out.
    return build_model_with_cfg(CvT, variant, pretrained, config=config, kwargs_filter=("in_chans",),
                                pretrained_filter_fn=lambda sd, model: model.checkpoint_filter(sd), **kwargs)


@register_model
def cvt_13(pretrained: bool = False, **kwargs) -> CvT:
    """CvT-13 at 224: 20.0M params, 4.57 GMACs (paper table 2)."""
    return _create_cvt("cvt_13", pretrained, **kwargs)


@register_model
def cvt_13_384(pretrained: bool = False, **kwargs) -> CvT:
    """CvT-13 at 384: 16.3 GMACs."""
    return _create_cvt("cvt_13_384", pretrained, **kwargs)


@register_model
def cvt_21(pretrained: bool = False, **kwargs) -> CvT:
    """CvT-21 at 224: 31.6M params, 7.18 GMACs."""
    return _create_cvt("cvt_21", pretrained, **kwargs)


@register_model
def cvt_21_384(pretrained: bool = False, **kwargs) -> CvT:
    """CvT-21 at 384: 24.8 GMACs."""
    return _create_cvt("cvt_21_384", pretrained, **kwargs)


@register_model
def cvt_w24(pretrained: bool = False, **kwargs) -> CvT:
    """CvT-W24 (wide) at 224: 277.2M params, 60.9 GMACs."""
    return _create_cvt("cvt_w24", pretrained, **kwargs)


@register_model
def cvt_w24_384(pretrained: bool = False, **kwargs) -> CvT:
    """CvT-W24 at 384 (the paper's W24 setting): 194.2 GMACs."""
    return _create_cvt("cvt_w24_384", pretrained, **kwargs)

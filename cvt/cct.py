"""CCT: Compact Convolutional Transformers, with ViT-Lite and CVT in the same family.

Hassani et al., "Escaping the Big Data Paradigm with Compact Transformers", 2021 (arXiv 2104.05704).

Three small transformers for small datasets (section 3): **ViT-Lite** splits the image into patches and
classifies from a class token; **CVT** replaces the class token with *sequence pooling* (SeqPool, an
attention-weighted mean of the output tokens); **CCT** also replaces the patches with a *convolutional
tokenizer* (conv -> ReLU -> max-pool, repeated), which keeps local structure and makes the position
embedding optional. CCT-L/KxC has L encoder layers and C tokenizer convolutions of kernel K.

This module matches the authors' code (SHI-Labs/Compact-Transformers ``src/cct.py`` and
``src/utils/``) number for number, including its encoder layer, which replaces the residual stream by
its normalised value after attention (``x = norm1(x + attn(pre_norm(x)))``, then the MLP residual).
The ``state_dict`` uses the authors' key names (``tokenizer.conv_layers.*``, ``classifier.*``), so their
released checkpoints load with ``strict=True``; :meth:`CCT.checkpoint_filter` resizes the position
embedding for another resolution and swaps the classifier for another class count, as their helpers do.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from ._cct_config import POOL, CCTConfig, LayerSpec
from ._errors import CheckpointError, ConfigError
from ._family import Family
from ._layers import DropPath

__all__ = ["CCT", "Tokenizer", "Attention", "EncoderLayer", "SeqPool", "SequenceClassifier", "PRESETS",
           "sinusoidal_embedding", "resize_pos_embed"]

_logger = logging.getLogger(__name__)


def sinusoidal_embedding(length: int, dim: int) -> torch.Tensor:
    """The fixed 1-D sine/cosine table over sequence positions, shape (1, length, dim).

    Position p, channel i: angle p / 10000 ** (2 * (i // 2) / dim); sine on even channels, cosine on odd.
    Angles are computed in float64 and rounded to float32 before sin/cos, as the authors' table is.
    """
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    pair = torch.div(torch.arange(dim), 2, rounding_mode="floor").to(torch.float64)
    angle = (pos / 10000 ** (2 * pair / dim)).float()
    table = torch.where(torch.arange(dim) % 2 == 0, angle.sin(), angle.cos())
    return table[None]


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 0) -> torch.Tensor:
    """Resample a learnable position embedding to another token grid (bilinear, prefix tokens kept).

    Args:
        pos_embed: (1, prefix + G*G, C), the embedding of a square G x G grid.
        grid: the new (H, W).
        num_prefix_tokens: leading non-grid tokens (1 for a class token).
    """
    prefix, tokens = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    side = math.isqrt(tokens.shape[1])
    if side * side != tokens.shape[1]:
        raise CheckpointError(f"position embedding of {tokens.shape[1]} grid tokens is not a square grid; "
                              f"cannot resize it to {grid[0]}x{grid[1]}")
    tokens = tokens.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # 1, C, G, G
    tokens = F.interpolate(tokens.float(), size=grid, mode="bilinear", align_corners=False)
    tokens = tokens.to(pos_embed.dtype).permute(0, 2, 3, 1).flatten(1, 2)  # 1, H*W, C
    return torch.cat((prefix, tokens), dim=1)


class Tokenizer(nn.Module):
    """Image -> tokens.

    ``conv``: ``conv_layers`` x (Conv2d without bias -> ReLU -> MaxPool2d(3, 2, 1)); intermediate width
    ``conv_channels``, last width the embedding dim. ``patch``: one Conv2d with bias, kernel = stride =
    patch size (ViT-Lite and CVT). Key names follow the authors' ``conv_layers.{i}.0``.
    """

    def __init__(self, config: CCTConfig):
        super().__init__()
        conv = config.tokenizer == "conv"
        widths = [config.in_chans] + [config.conv_channels] * (config.conv_layers - 1) + [config.embed_dim]
        layers = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            proj = nn.Conv2d(c_in, c_out, config.kernel_size, config.stride, config.padding, bias=not conv)
            layers.append(nn.Sequential(proj, nn.ReLU(), nn.MaxPool2d(*POOL)) if conv else nn.Sequential(proj))
        self.conv_layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """B, C_in, H, W -> (B, H'*W', C) tokens and the grid (H', W')."""
        x = self.conv_layers(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class Attention(nn.Module):
    """Multi-head self-attention: ``qkv`` without bias, scale head_dim ** -0.5, ``proj`` with bias."""

    fused: bool = True  # torch's scaled_dot_product_attention; False runs the explicit softmax path

    def __init__(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        # B, N, 3C -> 3 x (B, heads, N, C/heads), in the authors' (3, heads, head_dim) channel order.
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.attn_drop if self.training else 0.0
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, scale=self.scale)
        else:
            attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
            out = F.dropout(attn, drop, self.training) @ v
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class EncoderLayer(nn.Module):
    """The authors' encoder layer; note the middle line, which normalises the residual stream itself.

    ``x = x + drop_path(attn(pre_norm(x)))``; ``x = norm1(x)``;
    ``x = x + drop_path(dropout2(linear2(dropout1(gelu(linear1(x))))))``.
    """

    def __init__(self, spec: LayerSpec):
        super().__init__()
        self.pre_norm = nn.LayerNorm(spec.dim)
        self.self_attn = Attention(spec.dim, spec.num_heads, spec.attn_drop, spec.drop)
        self.linear1 = nn.Linear(spec.dim, spec.hidden)
        self.dropout1 = nn.Dropout(spec.drop)
        self.norm1 = nn.LayerNorm(spec.dim)
        self.linear2 = nn.Linear(spec.hidden, spec.dim)
        self.dropout2 = nn.Dropout(spec.drop)
        self.drop_path = DropPath(spec.drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.drop_path(x, self.self_attn(self.pre_norm(x))))
        return self.drop_path(x, self.dropout2(self.linear2(self.dropout1(F.gelu(self.linear1(x))))))


class SeqPool(nn.Linear):
    """Sequence pooling: a Linear(C, 1) scores each token, softmax over the sequence, weighted sum.

    A ``Linear`` itself so its weights sit at the authors' key (``classifier.attention_pool``).
    """

    def __init__(self, dim: int):
        super().__init__(dim, 1)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """B, N, C -> B, N, 1 token weights (each column sums to one)."""
        return F.linear(x, self.weight, self.bias).softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.weights(x).transpose(1, 2) @ x).squeeze(1)  # B, 1, N @ B, N, C -> B, C


class SequenceClassifier(nn.Module):
    """Class token or SeqPool, position embedding, encoder layers, final norm and ``fc``.

    Named ``classifier`` in :class:`CCT`, which gives the authors' keys (``classifier.blocks.0...``).
    """

    def __init__(self, config: CCTConfig, num_classes: int):
        super().__init__()
        dim = config.embed_dim
        self.num_prefix_tokens = config.num_prefix_tokens
        self.grid = config.grid_size()
        if config.pooling == "cls":
            self.class_emb = nn.Parameter(torch.zeros(1, 1, dim))  # the authors leave it at zero
        else:
            self.attention_pool = SeqPool(dim)
        length = config.sequence_length()
        self.pos_embed = config.pos_embed
        if config.pos_embed == "learnable":
            self.positional_emb = nn.Parameter(torch.zeros(1, length, dim))
        elif config.pos_embed == "sine":
            # Fixed, so a buffer (not a parameter); persistent, so it keeps the authors' checkpoint key.
            self.register_buffer("positional_emb", sinusoidal_embedding(length, dim))
        else:
            self.positional_emb = None
        self.dropout = nn.Dropout(config.drop_rate)
        self.blocks = nn.ModuleList(EncoderLayer(spec) for spec in config.layers())
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """The embedding for a token grid: as stored at the config's size, else resized or regenerated."""
        pe = self.positional_emb
        if grid == self.grid:
            return pe
        if self.pos_embed == "sine":
            return sinusoidal_embedding(grid[0] * grid[1] + self.num_prefix_tokens, pe.shape[-1]).to(pe)
        return resize_pos_embed(pe, grid, self.num_prefix_tokens)

    def forward_features(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """B, N, C tokens on ``grid`` -> B, C pooled features."""
        x = tokens
        if self.num_prefix_tokens:
            x = torch.cat((self.class_emb.expand(x.shape[0], -1, -1), x), dim=1)
        if self.positional_emb is not None:
            x = x + self.position_embedding(grid)
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 0] if self.num_prefix_tokens else self.attention_pool(x)


class CCT(nn.Module):
    """Compact Convolutional Transformer (and ViT-Lite / CVT, by config).

    Inputs of another size than ``config.img_size`` work: the position embedding is resized on the fly
    (learnable) or regenerated (sine).

    Args:
        config: the architecture; defaults to CCT-7/3x1 at 32x32.
        num_classes: classifier width; 0 returns pooled features.

    Example:
        >>> model = CCT(CCTConfig(), num_classes=10)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, config: CCTConfig | None = None, num_classes: int = 1000):
        super().__init__()
        self.config = config = config or CCTConfig()
        if not isinstance(config, CCTConfig):
            raise ConfigError(f"CCT needs a CCTConfig, got {type(config).__name__}")
        self.num_classes = num_classes
        self.num_features = config.embed_dim
        self.tokenizer = Tokenizer(config)
        self.classifier = SequenceClassifier(config, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # The authors' init: tokenizer convs Kaiming-normal (bias left at PyTorch's default), Linear
        # trunc-normal 0.02 with zero bias, LayerNorm 1/0, learnable position embedding trunc-normal 0.2.
        for m in self.tokenizer.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
        for m in self.classifier.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:  # qkv has none
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if isinstance(self.classifier.positional_emb, nn.Parameter):
            nn.init.trunc_normal_(self.classifier.positional_emb, std=0.2)

    def set_fused_attention(self, enabled: bool) -> "CCT":
        """Switch every layer between SDPA and the explicit softmax path (same numbers)."""
        for m in self.modules():
            if isinstance(m, Attention):
                m.fused = enabled
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """B, C, H, W -> B, num_features (SeqPool output, or the normalised class token)."""
        return self.classifier.forward_features(*self.tokenizer(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)
        self.classifier.fc = fc

    def checkpoint_filter(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fit a checkpoint of the authors' (or ours) to this model's resolution and class count.

        Keys already match. A learnable position embedding of another length is resampled to this
        model's grid; a sine one is replaced by this model's table. A classifier of another width is
        replaced by this model's freshly initialised one (and dropped when ``num_classes`` is 0).
        Anything else that differs is left for :func:`cvt.load_checkpoint` to report.
        """
        own = self.state_dict()
        out = dict(state_dict)
        key = "classifier.positional_emb"
        theirs, ours = out.get(key), own.get(key)
        # Same width, other length: the same model at another resolution.
        if theirs is not None and ours is not None and theirs.shape != ours.shape and theirs.ndim == 3 \
                and theirs.shape[-1] == ours.shape[-1]:
            if self.config.pos_embed == "sine":
                out[key] = ours
            else:
                out[key] = resize_pos_embed(theirs, self.classifier.grid, self.classifier.num_prefix_tokens)
            _logger.info("resized %s from %d to %d tokens", key, theirs.shape[1], ours.shape[1])
        for key in ("classifier.fc.weight", "classifier.fc.bias"):
            if key in out and key not in own:
                del out[key]
            elif key in out and out[key].shape != own[key].shape:
                _logger.warning("replacing %s: checkpoint has %d classes, the model %d", key,
                                out[key].shape[0], own[key].shape[0])
                out[key] = own[key]
        return out


# ---------------------------------------------------------------------------- presets and timm

# Heads, MLP ratio and width of the authors' sizes, by layer count (cct_2 ... cct_14).
_SIZES = {2: (2, 1.0, 128), 4: (2, 1.0, 128), 6: (4, 2.0, 256), 7: (4, 2.0, 256), 14: (6, 3.0, 384)}


def _variant(layers: int, kernel: int, convs: int, img_size: int = 32, pos_embed: str = "learnable") -> CCTConfig:
    """CCT-{layers}/{kernel}x{convs} at ``img_size``."""
    heads, mlp, dim = _SIZES[layers]
    return CCTConfig(num_layers=layers, num_heads=heads, mlp_ratio=mlp, embed_dim=dim, kernel_size=kernel,
                     conv_layers=convs, img_size=img_size, pos_embed=pos_embed)


PRESETS: dict[str, CCTConfig] = {
    "cct_2_3x2_32": _variant(2, 3, 2),
    "cct_2_3x2_32_sine": _variant(2, 3, 2, pos_embed="sine"),
    "cct_4_3x2_32": _variant(4, 3, 2),
    "cct_4_3x2_32_sine": _variant(4, 3, 2, pos_embed="sine"),
    "cct_6_3x1_32": _variant(6, 3, 1),
    "cct_6_3x1_32_sine": _variant(6, 3, 1, pos_embed="sine"),
    "cct_6_3x2_32": _variant(6, 3, 2),
    "cct_6_3x2_32_sine": _variant(6, 3, 2, pos_embed="sine"),
    "cct_7_3x1_32": _variant(7, 3, 1),
    "cct_7_3x1_32_sine": _variant(7, 3, 1, pos_embed="sine"),
    "cct_7_3x1_32_c100": _variant(7, 3, 1),
    "cct_7_3x1_32_sine_c100": _variant(7, 3, 1, pos_embed="sine"),
    "cct_7_3x2_32": _variant(7, 3, 2),
    "cct_7_3x2_32_sine": _variant(7, 3, 2, pos_embed="sine"),
    "cct_7_7x2_224": _variant(7, 7, 2, 224),
    "cct_7_7x2_224_sine": _variant(7, 7, 2, 224, pos_embed="sine"),
    "cct_14_7x2_224": _variant(14, 7, 2, 224),
    "cct_14_7x2_384": _variant(14, 7, 2, 384),
    "cct_14_7x2_384_fl": _variant(14, 7, 2, 384),
    # ViT-Lite-7/4 and CVT-7/4 (the authors' vit_7_4_32 / cvt_7_4_32, renamed here so that "cvt" keeps
    # meaning Wu et al.'s CvT in this package).
    "vit_lite_7_4_32": CCTConfig(tokenizer="patch", kernel_size=4, pooling="cls"),
    "compact_vit_7_4_32": CCTConfig(tokenizer="patch", kernel_size=4),
}

# Classifier width of each registered variant (CIFAR-10, CIFAR-100, Flowers-102, ImageNet).
_NUM_CLASSES = {name: 100 if name.endswith("_c100") else 102 if name.startswith("cct_7_7x2") or
                name.endswith("_fl") else 1000 if name.startswith("cct_14") else 10 for name in PRESETS}

# The authors' released weights (their ``model_urls``).
_BASE_URL = "http://ix.cs.uoregon.edu/~alih/compact-transformers/checkpoints/"
_URLS = {
    "cct_7_3x1_32": "pretrained/cct_7_3x1_32_cifar10_300epochs.pth",
    "cct_7_3x1_32_sine": "pretrained/cct_7_3x1_32_sine_cifar10_5000epochs.pth",
    "cct_7_3x1_32_c100": "pretrained/cct_7_3x1_32_cifar100_300epochs.pth",
    "cct_7_3x1_32_sine_c100": "pretrained/cct_7_3x1_32_sine_cifar100_5000epochs.pth",
    "cct_7_7x2_224_sine": "pretrained/cct_7_7x2_224_flowers102.pth",
    "cct_14_7x2_224": "pretrained/cct_14_7x2_224_imagenet.pth",
    "cct_14_7x2_384": "finetuned/cct_14_7x2_384_imagenet.pth",
    "cct_14_7x2_384_fl": "finetuned/cct_14_7x2_384_flowers102.pth",
}

_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _cfg(name: str, config: CCTConfig) -> dict:
    size = config.img_size
    small = size == 32
    return {
        "url": _BASE_URL + _URLS[name] if name in _URLS else "", "num_classes": _NUM_CLASSES[name],
        "input_size": (config.in_chans, size, size), "pool_size": None,
        "crop_pct": 0.875 if size == 224 else 1.0, "interpolation": "bicubic",
        "mean": _CIFAR_MEAN if small else _IMAGENET_MEAN, "std": _CIFAR_STD if small else _IMAGENET_STD,
        "first_conv": "tokenizer.conv_layers.0.0", "classifier": "classifier.fc",
    }


default_cfgs = generate_default_cfgs({name: _cfg(name, config) for name, config in PRESETS.items()})

FAMILY = Family(name="cct", config_cls=CCTConfig, model_cls=CCT, presets=PRESETS, yaml_name="cct",
                timm_name="cct_7_3x1_32")

# timm keyword -> config field, for the usual overrides (timm.create_model(name, drop_path_rate=0.2)).
_OVERRIDES = ("in_chans", "img_size", "drop_rate", "attn_drop_rate", "drop_path_rate")


def _create_cct(variant: str, pretrained: bool = False, **kwargs) -> CCT:
    """Build a preset, or any architecture given as ``config=`` (a CCTConfig or a YAML path)."""
    config = kwargs.pop("config", None)
    if isinstance(config, (str, Path)):
        config = CCTConfig.from_yaml(config)
    config = config or PRESETS[variant]
    changes = {key: kwargs.pop(key) for key in _OVERRIDES if key in kwargs}
    if changes:
        config = config.replace(**changes)
    # in_chans lives in the config; timm's builder would pass its default again, so filter it out.
    return build_model_with_cfg(CCT, variant, pretrained, config=config, kwargs_filter=("in_chans",),
                                pretrained_filter_fn=lambda sd, model: model.checkpoint_filter(sd), **kwargs)


@register_model
def cct_2_3x2_32(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-2/3x2 at 32, learnable PE: 0.284M params, 0.033 GMACs (README convention)."""
    return _create_cct("cct_2_3x2_32", pretrained, **kwargs)


@register_model
def cct_2_3x2_32_sine(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-2/3x2 at 32, sine PE."""
    return _create_cct("cct_2_3x2_32_sine", pretrained, **kwargs)


@register_model
def cct_4_3x2_32(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-4/3x2 at 32: 0.482M params, 0.046 GMACs (README convention)."""
    return _create_cct("cct_4_3x2_32", pretrained, **kwargs)


@register_model
def cct_4_3x2_32_sine(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-4/3x2 at 32, sine PE."""
    return _create_cct("cct_4_3x2_32_sine", pretrained, **kwargs)


@register_model
def cct_6_3x1_32(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-6/3x1 at 32."""
    return _create_cct("cct_6_3x1_32", pretrained, **kwargs)


@register_model
def cct_6_3x1_32_sine(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-6/3x1 at 32, sine PE."""
    return _create_cct("cct_6_3x1_32_sine", pretrained, **kwargs)


@register_model
def cct_6_3x2_32(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-6/3x2 at 32: 3.327M params, 0.241 GMACs (README convention)."""
    return _create_cct("cct_6_3x2_32", pretrained, **kwargs)


@register_model
def cct_6_3x2_32_sine(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-6/3x2 at 32, sine PE."""
    return _create_cct("cct_6_3x2_32_sine", pretrained, **kwargs)


@register_model
def cct_7_3x1_32(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-7/3x1 at 32 (CIFAR-10): 3.760M params, 0.947 GMACs (README convention), 1.18 by ours."""
    return _create_cct("cct_7_3x1_32", pretrained, **kwargs)


@register_model
def cct_7_3x1_32_sine(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-7/3x1 at 32, sine PE (CIFAR-10)."""
    return _create_cct("cct_7_3x1_32_sine", pretrained, **kwargs)


@register_model
def cct_7_3x1_32_c100(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-7/3x1 at 32 with 100 classes (CIFAR-100)."""
    return _create_cct("cct_7_3x1_32_c100", pretrained, **kwargs)


@register_model
def cct_7_3x1_32_sine_c100(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-7/3x1 at 32, sine PE, 100 classes (CIFAR-100)."""
    return _create_cct("cct_7_3x1_32_sine_c100", pretrained, **kwargs)


@register_model
def cct_7_3x2_32(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-7/3x2 at 32: 3.853M params, 0.275 GMACs (README convention)."""
    return _create_cct("cct_7_3x2_32", pretrained, **kwargs)


@register_model
def cct_7_3x2_32_sine(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-7/3x2 at 32, sine PE."""
    return _create_cct("cct_7_3x2_32_sine", pretrained, **kwargs)


@register_model
def cct_7_7x2_224(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-7/7x2 at 224, 102 classes (Flowers-102)."""
    return _create_cct("cct_7_7x2_224", pretrained, **kwargs)


@register_model
def cct_7_7x2_224_sine(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-7/7x2 at 224, sine PE, 102 classes (Flowers-102)."""
    return _create_cct("cct_7_7x2_224_sine", pretrained, **kwargs)


@register_model
def cct_14_7x2_224(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-14/7x2 at 224 (ImageNet): 22.37M params, 5.11 GMACs (README convention)."""
    return _create_cct("cct_14_7x2_224", pretrained, **kwargs)


@register_model
def cct_14_7x2_384(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-14/7x2 at 384 (ImageNet): 22.51M params, 15.02 GMACs (README convention)."""
    return _create_cct("cct_14_7x2_384", pretrained, **kwargs)


@register_model
def cct_14_7x2_384_fl(pretrained: bool = False, **kwargs) -> CCT:
    """CCT-14/7x2 at 384, 102 classes (Flowers-102 fine-tune)."""
    return _create_cct("cct_14_7x2_384_fl", pretrained, **kwargs)


@register_model
def vit_lite_7_4_32(pretrained: bool = False, **kwargs) -> CCT:
    """ViT-Lite-7/4 at 32: 4x4 patches, class token."""
    return _create_cct("vit_lite_7_4_32", pretrained, **kwargs)


@register_model
def compact_vit_7_4_32(pretrained: bool = False, **kwargs) -> CCT:
    """CVT-7/4 at 32 (Compact Vision Transformer): 4x4 patches, SeqPool."""
    return _create_cct("compact_vit_7_4_32", pretrained, **kwargs)

"""``CCTConfig``: one description for ViT-Lite, CVT and CCT (Hassani et al. 2021).

The YAML layout follows ``CvTConfig``'s (``MODEL.SPEC`` with upper-case keys, image size under
``TRAIN``/``TEST``), but a CCT is a single stack of identical-width layers, so SPEC values are scalars.
``MODEL.NAME`` is always ``cct``: it tells a CCT config from a CvT one (``cls_cvt``). CCT-7/3x1 at 32:

    MODEL:
      NAME: cct
      SPEC:
        TOKENIZER: conv          # conv (CCT) or patch (ViT-Lite, CVT)
        KERNEL_SIZE: 3           # tokenizer kernel; the patch size for TOKENIZER patch
        CONV_LAYERS: 1           # conv -> ReLU -> max-pool blocks in the conv tokenizer
        CONV_CHANNELS: 64        # width of the tokenizer's intermediate conv layers
        DIM_EMBED: 256
        DEPTH: 7                 # encoder layers
        NUM_HEADS: 4             # or one value per layer: [4, 4, 2, ...]
        MLP_RATIO: 2.0           # or one value per layer
        POS_EMBED: learnable     # learnable, sine or none
        POOLING: seqpool         # seqpool (CVT, CCT) or cls (ViT-Lite's class token)
        DROP_RATE: 0.0
        ATTN_DROP_RATE: 0.1
        DROP_PATH_RATE: 0.1
        IN_CHANS: 3
    TRAIN:
      IMAGE_SIZE: [32, 32]
    TEST:
      IMAGE_SIZE: [32, 32]

Optional keys: ``TOKENIZER_STRIDE`` / ``TOKENIZER_PADDING`` override the conv tokenizer's derived
stride ``max(1, k // 2 - 1)`` and padding ``max(1, k // 2)`` (the authors' rule); they are written only
when set. Like ``CvTConfig``, ``NUM_HEADS`` and ``MLP_RATIO`` may be per layer, which the search needs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._config import YamlConfig, _image_size, _tuple, fit_width
from ._errors import ConfigError

__all__ = ["CCTConfig", "LayerSpec", "TOKENIZERS", "POS_EMBEDS", "POOLINGS"]

TOKENIZERS = ("conv", "patch")
POS_EMBEDS = ("learnable", "sine", "none")
POOLINGS = ("seqpool", "cls")
MODEL_NAME = "cct"

# The conv tokenizer's max-pool (kernel, stride, padding): fixed in the authors' code.
POOL = (3, 2, 1)

# dataclass field -> MODEL.SPEC key, in the order written.
_SPEC_KEYS = {
    "tokenizer": "TOKENIZER",
    "kernel_size": "KERNEL_SIZE",
    "conv_layers": "CONV_LAYERS",
    "conv_channels": "CONV_CHANNELS",
    "tokenizer_stride": "TOKENIZER_STRIDE",
    "tokenizer_padding": "TOKENIZER_PADDING",
    "embed_dim": "DIM_EMBED",
    "num_layers": "DEPTH",
    "num_heads": "NUM_HEADS",
    "mlp_ratio": "MLP_RATIO",
    "pos_embed": "POS_EMBED",
    "pooling": "POOLING",
    "drop_rate": "DROP_RATE",
    "attn_drop_rate": "ATTN_DROP_RATE",
    "drop_path_rate": "DROP_PATH_RATE",
    "in_chans": "IN_CHANS",
}
_SPEC_FIELDS = {v: k for k, v in _SPEC_KEYS.items()}
_OPTIONAL = ("tokenizer_stride", "tokenizer_padding")  # None = derived from the kernel; omitted from YAML
_RATES = ("drop_rate", "attn_drop_rate", "drop_path_rate")


class LayerSpec(NamedTuple):
    """Resolved settings of encoder layer ``index``."""

    index: int
    dim: int
    num_heads: int
    mlp_ratio: float
    hidden: int  # int(dim * mlp_ratio), as the authors compute the feed-forward width
    drop: float
    attn_drop: float
    drop_path: float


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class CCTConfig(YamlConfig):
    """A compact transformer: tokenizer, a stack of encoder layers, and a pooling head.

    Defaults are CCT-7/3x1 at 32x32 (the authors' CIFAR model). ViT-Lite is ``tokenizer="patch",
    pooling="cls"``; CVT is ``tokenizer="patch", pooling="seqpool"``.

    Example:
        >>> cfg = CCTConfig(num_layers=2, num_heads=2, mlp_ratio=1.0, embed_dim=128, conv_layers=2)
        >>> cfg.grid_size(), cfg.sequence_length()
        ((8, 8), 64)
    """

    # Tokenizer.
    tokenizer: str = "conv"
    kernel_size: int = 3
    conv_layers: int = 1
    conv_channels: int = 64  # intermediate width when conv_layers > 1 (the authors' in_planes)
    tokenizer_stride: int | None = None  # None: max(1, k // 2 - 1) for conv, k for patch
    tokenizer_padding: int | None = None  # None: max(1, k // 2) for conv, 0 for patch
    # Encoder.
    embed_dim: int = 256
    num_layers: int = 7
    num_heads: int | tuple = 4  # may be per layer: a tuple of length num_layers
    mlp_ratio: float | tuple = 2.0  # may be per layer
    pos_embed: str = "learnable"
    pooling: str = "seqpool"  # SeqPool: attention-weighted mean of the tokens, no class token
    # Regularisation (the authors' defaults).
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.1
    drop_path_rate: float = 0.1  # linspace(0, rate, num_layers) over the layers
    # Input.
    in_chans: int = 3
    img_size: int = 32  # sets the position embedding's length (TRAIN.IMAGE_SIZE)

    def __post_init__(self) -> None:
        for f in ("num_heads", "mlp_ratio"):
            object.__setattr__(self, f, _tuple(getattr(self, f)))
        self._validate()
        # Normalise numbers so equal architectures compare and hash equal (2 vs 2.0).
        ratio = self.mlp_ratio
        object.__setattr__(self, "mlp_ratio",
                           tuple(float(r) for r in ratio) if isinstance(ratio, tuple) else float(ratio))
        for f in _RATES:
            object.__setattr__(self, f, float(getattr(self, f)))

    # ------------------------------------------------------------------ structure
    @property
    def stride(self) -> int:
        """The tokenizer convolution's stride (explicit or derived)."""
        if self.tokenizer_stride is not None:
            return self.tokenizer_stride
        return self.kernel_size if self.tokenizer == "patch" else max(1, self.kernel_size // 2 - 1)

    @property
    def padding(self) -> int:
        """The tokenizer convolution's padding (explicit or derived)."""
        if self.tokenizer_padding is not None:
            return self.tokenizer_padding
        return 0 if self.tokenizer == "patch" else max(1, self.kernel_size // 2)

    @property
    def num_prefix_tokens(self) -> int:
        """1 with a class token (ViT-Lite), else 0."""
        return int(self.pooling == "cls")

    @property
    def is_per_layer(self) -> bool:
        return isinstance(self.num_heads, tuple) or isinstance(self.mlp_ratio, tuple)

    def layer_values(self, name: str) -> tuple:
        """Per-layer values of ``num_heads`` or ``mlp_ratio`` (a scalar is broadcast)."""
        value = getattr(self, name)
        return value if isinstance(value, tuple) else (value,) * self.num_layers

    def layer(self, index: int) -> LayerSpec:
        """Resolved settings of encoder layer ``index``, including its drop-path rate."""
        n = self.num_layers
        ratio = float(self.layer_values("mlp_ratio")[index])
        return LayerSpec(
            index=index,
            dim=self.embed_dim,
            num_heads=int(self.layer_values("num_heads")[index]),
            mlp_ratio=ratio,
            hidden=int(self.embed_dim * ratio),
            drop=self.drop_rate,
            attn_drop=self.attn_drop_rate,
            drop_path=self.drop_path_rate * index / (n - 1) if n > 1 else 0.0,
        )

    def layers(self) -> list[LayerSpec]:
        return [self.layer(i) for i in range(self.num_layers)]

    def grid_size(self, resolution: int | None = None) -> tuple[int, int]:
        """Token grid (H, W) after the tokenizer for a square input (default ``img_size``)."""
        size = resolution or self.img_size
        h = size
        k, s, p = self.kernel_size, self.stride, self.padding
        for i in range(self.conv_layers):
            h = (h + 2 * p - k) // s + 1
            if self.tokenizer == "conv":
                h = (h + 2 * POOL[2] - POOL[0]) // POOL[1] + 1
            if h < 1:
                raise ConfigError(f"input {size}x{size} is too small: tokenizer layer {i} would leave an empty "
                                  f"grid; use a larger resolution or fewer CONV_LAYERS")
        return h, h

    def sequence_length(self, resolution: int | None = None) -> int:
        """Tokens the encoder sees: the grid plus the class token if any."""
        h, w = self.grid_size(resolution)
        return h * w + self.num_prefix_tokens

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        def spec(f: str) -> str:
            return f"MODEL.SPEC.{_SPEC_KEYS[f]}"

        for f, allowed in (("tokenizer", TOKENIZERS), ("pos_embed", POS_EMBEDS), ("pooling", POOLINGS)):
            if getattr(self, f) not in allowed:
                raise ConfigError(f"{spec(f)} = {getattr(self, f)!r}: use one of {', '.join(allowed)}")
        for f in ("kernel_size", "conv_layers", "conv_channels", "embed_dim", "num_layers", "in_chans"):
            v = getattr(self, f)
            if not _is_int(v) or v < 1:
                raise ConfigError(f"{spec(f)} = {v!r}: expected an integer >= 1")
        for f, minimum in (("tokenizer_stride", 1), ("tokenizer_padding", 0)):
            v = getattr(self, f)
            if v is not None and (not _is_int(v) or v < minimum):
                raise ConfigError(f"{spec(f)} = {v!r}: expected an integer >= {minimum} (or leave it out)")
        if self.tokenizer == "patch":
            if self.conv_layers != 1:
                raise ConfigError(f"MODEL.SPEC.CONV_LAYERS = {self.conv_layers}: the patch tokenizer is one "
                                  f"convolution; use CONV_LAYERS 1 or TOKENIZER conv")
            if self.tokenizer_stride is not None or self.tokenizer_padding is not None:
                raise ConfigError("MODEL.SPEC.TOKENIZER_STRIDE/TOKENIZER_PADDING: the patch tokenizer's stride is "
                                  "its KERNEL_SIZE and its padding 0; leave them out or use TOKENIZER conv")
        for f in _RATES:
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                raise ConfigError(f"{spec(f)} = {v!r}: expected a rate in [0, 1)")
        for f in ("num_heads", "mlp_ratio"):
            entry = getattr(self, f)
            if isinstance(entry, tuple) and len(entry) != self.num_layers:
                raise ConfigError(f"{spec(f)} has {len(entry)} per-layer values but DEPTH = {self.num_layers}: "
                                  f"give one value per layer or a single value")
            values = entry if isinstance(entry, tuple) else (entry,)
            for j, v in enumerate(values):
                where = f"{spec(f)}[{j}]" if isinstance(entry, tuple) else spec(f)
                if f == "num_heads":
                    if not _is_int(v) or v < 1:
                        raise ConfigError(f"{where} = {v!r}: expected an integer >= 1")
                    if self.embed_dim % v:
                        raise ConfigError(f"{where} = {v} does not divide DIM_EMBED = {self.embed_dim}: "
                                          f"use a head count that divides the width")
                elif isinstance(v, bool) or not isinstance(v, (int, float)) or int(self.embed_dim * v) < 1:
                    raise ConfigError(f"{where} = {v!r}: expected a positive number (DIM_EMBED x ratio >= 1)")
        if not _is_int(self.img_size) or self.img_size < 1:
            raise ConfigError(f"TRAIN.IMAGE_SIZE = {self.img_size!r}: expected a positive integer")
        if self.tokenizer == "patch" and self.img_size % self.kernel_size:
            raise ConfigError(f"TRAIN.IMAGE_SIZE = {self.img_size} is not a multiple of the patch size "
                              f"KERNEL_SIZE = {self.kernel_size}: border pixels would be dropped")
        self.grid_size()

    # ------------------------------------------------------------------ conversion
    def replace(self, **changes: Any) -> "CCTConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def describe(self, resolution: int | None = None) -> list[str]:
        """One line describing the architecture at ``resolution``: tokenizer, grid, tokens, layers, pooling."""
        h, w = self.grid_size(resolution)
        return [f"{self.tokenizer} tokenizer ({self.conv_layers} x {self.kernel_size}x{self.kernel_size}) -> "
                f"{h}x{w} grid, {self.sequence_length(resolution)} tokens; {self.num_layers} layers of width "
                f"{self.embed_dim}; {self.pooling} pooling, {self.pos_embed} position embedding"]

    def scale_width(self, mult: float) -> "CCTConfig":
        """Width (a multiple of every head count) and tokenizer channels times ``mult``."""
        heads = self.num_heads if isinstance(self.num_heads, tuple) else (self.num_heads,)
        return self.replace(embed_dim=fit_width(self.embed_dim, heads, mult),
                            conv_channels=max(1, round(self.conv_channels * mult)))

    def to_spec(self) -> dict:
        """The ``MODEL.SPEC`` mapping (plain lists, YAML/JSON ready)."""
        spec: dict[str, Any] = {}
        for f, key in _SPEC_KEYS.items():
            value = getattr(self, f)
            if f in _OPTIONAL and value is None:
                continue
            spec[key] = list(value) if isinstance(value, tuple) else value
        return spec

    def to_dict(self) -> dict:
        """``MODEL`` (NAME cct, SPEC) plus TRAIN/TEST image sizes, as ``CvTConfig.to_dict`` lays them out."""
        size = [self.img_size, self.img_size]
        return {"MODEL": {"NAME": MODEL_NAME, "SPEC": self.to_spec()},
                "TRAIN": {"IMAGE_SIZE": size}, "TEST": {"IMAGE_SIZE": list(size)}}

    @classmethod
    def from_spec(cls, spec: dict, *, img_size: int = 32) -> "CCTConfig":
        """Build from a ``MODEL.SPEC`` mapping; unknown keys are an error, missing ones take defaults."""
        if not isinstance(spec, dict):
            raise ConfigError(f"MODEL.SPEC must be a mapping of keys to values, got {type(spec).__name__}")
        unknown = sorted(set(spec) - set(_SPEC_FIELDS))
        if unknown:
            raise ConfigError(f"MODEL.SPEC has unknown key(s) {', '.join(unknown)}; "
                              f"known keys: {', '.join(_SPEC_FIELDS)}")
        return cls(img_size=img_size, **{_SPEC_FIELDS[k]: v for k, v in spec.items()})

    @classmethod
    def from_dict(cls, data: dict) -> "CCTConfig":
        """Build from the layout of :meth:`to_dict` (``MODEL.NAME`` cct, ``MODEL.SPEC``, ``TRAIN.IMAGE_SIZE``)."""
        if not isinstance(data, dict) or not isinstance(data.get("MODEL"), dict) or "SPEC" not in data["MODEL"]:
            raise ConfigError("expected a CCT config with MODEL.NAME cct and a MODEL.SPEC section "
                              "(see experiments/cct/cct-7-3x1-32.yaml)")
        name = data["MODEL"].get("NAME", MODEL_NAME)
        if name != MODEL_NAME:
            raise ConfigError(f"MODEL.NAME = {name!r}: a CCT config has NAME {MODEL_NAME} "
                              f"(cls_cvt is a CvT config: read it with CvTConfig)")
        return cls.from_spec(data["MODEL"]["SPEC"], img_size=_image_size(data, 32))

    def arch_id(self) -> str:
        """Short stable hash of the architecture.

        Drop rates are excluded; the tokenizer's stride and padding enter resolved (explicit or derived),
        and the image size enters when there is a position embedding, whose length it sets.
        """
        spec = self.to_spec()
        for f in _RATES:
            spec.pop(_SPEC_KEYS[f])
        spec.update(TOKENIZER_STRIDE=self.stride, TOKENIZER_PADDING=self.padding)
        if self.conv_layers == 1:  # no intermediate layer, so its width does not exist
            spec.pop("CONV_CHANNELS")
        if self.pos_embed != "none":
            spec["IMAGE_SIZE"] = self.img_size
        blob = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

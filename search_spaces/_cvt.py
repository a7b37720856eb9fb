"""Hierarchical CvT spaces: per-stage options plus per-block K/V stride and MLP ratio.

One data description (:class:`StageOptions` per stage) covers the paper's CvT-13-NAS space, the general
``cvt`` space and user YAML spaces. Flat names (stable; they are what studies store):

    stage{i}.depth  stage{i}.embed_dim  stage{i}.num_heads  stage{i}.patch_size  stage{i}.patch_stride
    stage{i}.kernel_qkv  stage{i}.qkv_proj_method  stage{i}.cls_token
    stage{i}.block{j:02d}.kv_stride  stage{i}.block{j:02d}.mlp_ratio      (j < the stage's depth)

Derived, not searched: conv-embedding padding ``(k - s + 1) // 2`` (CvT-13's 7/4/2 and 3/2/1), Q/K/V
padding ``k // 2``, Q stride 1, QKV bias on, no position embedding.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Mapping

from cvt import PROJ_METHODS, CvTConfig, UserError

from ._params import Choice, IntRange, Param
from ._space import SearchSpace

__all__ = ["StageOptions", "CvTSpace", "STAGE_KEYS", "BLOCK_KEYS"]

# Per-stage dimensions, in sampling order (depth first: the block dimensions depend on it).
STAGE_KEYS = ("depth", "embed_dim", "num_heads", "patch_size", "patch_stride", "kernel_qkv",
              "qkv_proj_method", "cls_token")
BLOCK_KEYS = ("kv_stride", "mlp_ratio")
_INT_KEYS = ("depth", "embed_dim", "num_heads", "patch_size", "patch_stride", "kernel_qkv", "kv_stride")
_MAX_DEPTH = 99  # block names carry two digits


def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple, range)) else (value,)


@dataclass(frozen=True)
class StageOptions:
    """Allowed values of one stage; every field is a tuple of choices (one value = fixed).

    ``kv_stride`` and ``mlp_ratio`` are chosen per block; everything else once for the stage.
    Scalars and lists are accepted and stored as tuples.
    """

    depth: tuple[int, ...]
    embed_dim: tuple[int, ...]
    num_heads: tuple[int, ...]
    patch_size: tuple[int, ...] = (3,)
    patch_stride: tuple[int, ...] = (2,)
    kernel_qkv: tuple[int, ...] = (3,)
    qkv_proj_method: tuple[str, ...] = ("dw_bn",)
    cls_token: tuple[bool, ...] = (False,)
    kv_stride: tuple[int, ...] = (2,)
    mlp_ratio: tuple[float, ...] = (4.0,)
    drop_path_rate: float = 0.0  # a training setting, fixed per stage (linspace over its blocks)

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "drop_path_rate":
                object.__setattr__(self, f.name, _as_tuple(getattr(self, f.name)))

    def check(self, where: str) -> None:
        """Raise ``UserError`` (prefixed with ``where``) unless every combination is a valid CvT stage."""
        for key in _INT_KEYS:
            for v in getattr(self, key):
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise UserError(f"{where}.{key}: {v!r} is not an integer >= 1")
        if max(self.depth) > _MAX_DEPTH:
            raise UserError(f"{where}.depth: at most {_MAX_DEPTH} blocks per stage")
        for v in self.mlp_ratio:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise UserError(f"{where}.mlp_ratio: {v!r} is not a positive number")
            if int(min(self.embed_dim) * v) < 1:
                raise UserError(f"{where}.mlp_ratio: {v} gives an empty MLP at embed_dim {min(self.embed_dim)}")
        for v in self.qkv_proj_method:
            if v not in PROJ_METHODS:
                raise UserError(f"{where}.qkv_proj_method: {v!r} is not one of {', '.join(PROJ_METHODS)}")
        for v in self.cls_token:
            if not isinstance(v, bool):
                raise UserError(f"{where}.cls_token: {v!r} is not true or false")
        for k in self.kernel_qkv:
            if k % 2 == 0:
                raise UserError(f"{where}.kernel_qkv: {k} is even; Q keeps its token grid only with an odd "
                                f"kernel (padding k // 2)")
        for h in self.num_heads:
            for d in self.embed_dim:
                if d % h:
                    raise UserError(f"{where}.num_heads: {h} does not divide embed_dim {d}; every head count "
                                    f"must divide every width of the stage")
        rate = self.drop_path_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise UserError(f"{where}.drop_path_rate: {rate!r} is not a rate in [0, 1)")


def _patch_padding(kernel: int, stride: int) -> int:
    return max(0, (kernel - stride + 1) // 2)


def _per_stage(values: list) -> Any:
    """A stage's per-block values, collapsed to a scalar when uniform (so CvT-13 decodes to its preset)."""
    return values[0] if all(v == values[0] for v in values) else tuple(values)


@dataclass(frozen=True, repr=False)
class CvTSpace(SearchSpace):
    """A CvT space: one :class:`StageOptions` per stage.

    Args:
        name: the space's name (``get_space`` key or the YAML's ``name``).
        stages: options per stage.
        img_size: the resolution decoded configs are made for (``CvTConfig.img_size``).
        description: one line for listings.
        reference: the hand-made member searches are compared with (a preset name or a model YAML; the
            self-check shrinks it in width to fit the budget).

    Example:
        >>> space = CvTSpace("tiny", (StageOptions(depth=(1, 2), embed_dim=64, num_heads=1,
        ...                                        patch_size=7, patch_stride=4, cls_token=True),))
        >>> space.cardinality()
        2
    """

    name: str
    stages: tuple[StageOptions, ...]
    img_size: int = 224
    description: str = ""
    reference: str = "cvt_13"
    family: ClassVar[str] = "cvt"

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not isinstance(self.name, str) or not self.name:
            raise UserError("a search space needs a non-empty name")
        if not self.stages:
            raise UserError(f"space {self.name!r}: give at least one stage")
        if isinstance(self.img_size, bool) or not isinstance(self.img_size, int) or self.img_size < 1:
            raise UserError(f"space {self.name!r}: img_size {self.img_size!r} is not a positive integer")
        smallest = self.img_size  # the smallest grid any member can reach, stage by stage
        for i, stage in enumerate(self.stages):
            stage.check(f"space {self.name!r}: stages[{i}]")
            smallest = min((smallest + 2 * _patch_padding(k, s) - k) // s + 1
                           for k in stage.patch_size for s in stage.patch_stride)
            if smallest < 1:
                raise UserError(f"space {self.name!r}: at img_size {self.img_size} stage {i} can get an empty "
                                f"token grid; use smaller strides/kernels or a larger img_size")
        params: list[Param] = []
        constants: dict[str, Any] = {}

        def add(name: str, values: tuple, active_if: tuple[str, int] | None = None, ordinal: bool = False):
            if len(values) == 1:
                constants[name] = values[0]
            elif ordinal and values == tuple(range(min(values), max(values) + 1)):
                params.append(IntRange(name, min(values), max(values), active_if))  # TPE sees the order
            else:
                params.append(Choice(name, values, active_if))

        for i, stage in enumerate(self.stages):
            for key in STAGE_KEYS:
                values = getattr(stage, key)
                if key == "mlp_ratio":
                    values = tuple(float(v) for v in values)
                add(f"stage{i}.{key}", values, ordinal=key == "depth")
            searched_depth = len(stage.depth) > 1
            for j in range(max(stage.depth)):
                # Blocks every depth has are unconditional; later ones exist only for deeper stages.
                cond = (f"stage{i}.depth", j) if searched_depth and j >= min(stage.depth) else None
                for key in BLOCK_KEYS:
                    values = getattr(stage, key)
                    if key == "mlp_ratio":
                        values = tuple(float(v) for v in values)
                    add(f"stage{i}.block{j:02d}.{key}", values, cond)
        self._define(params, constants)

    # ------------------------------------------------------------------ config <-> values
    def _build(self, values: Mapping[str, Any]) -> CvTConfig:
        n = len(self.stages)

        def stage(key: str) -> tuple:
            return tuple(values[f"stage{i}.{key}"] for i in range(n))

        def per_block(key: str) -> tuple:
            return tuple(_per_stage([values[f"stage{i}.block{j:02d}.{key}"] for j in range(depths[i])])
                         for i in range(n))

        depths = stage("depth")
        kernels, strides, kqkv = stage("patch_size"), stage("patch_stride"), stage("kernel_qkv")
        return CvTConfig(
            patch_size=kernels,
            patch_stride=strides,
            patch_padding=tuple(_patch_padding(k, s) for k, s in zip(kernels, strides)),
            embed_dims=stage("embed_dim"),
            depths=depths,
            num_heads=stage("num_heads"),
            mlp_ratio=per_block("mlp_ratio"),
            stride_kv=per_block("kv_stride"),
            stride_q=(1,) * n,
            attn_drop_rate=(0.0,) * n,
            drop_rate=(0.0,) * n,
            drop_path_rate=tuple(float(s.drop_path_rate) for s in self.stages),
            qkv_bias=(True,) * n,
            cls_token=stage("cls_token"),
            pos_embed=(False,) * n,
            qkv_proj_method=stage("qkv_proj_method"),
            kernel_qkv=kqkv,
            padding_kv=tuple(k // 2 for k in kqkv),
            padding_q=tuple(k // 2 for k in kqkv),
            img_size=self.img_size,
        )

    def _values_of(self, config: Any) -> dict[str, Any]:
        if not isinstance(config, CvTConfig):
            raise UserError(f"space {self.name!r} holds CvT configs, not {type(config).__name__}")
        if config.num_stages != len(self.stages):
            raise UserError(f"not in space {self.name!r}: {config.num_stages} stages, the space has "
                            f"{len(self.stages)}")
        values: dict[str, Any] = {}
        for i in range(config.num_stages):
            heads = set(config.stage_values("num_heads", i))
            values.update({
                f"stage{i}.depth": config.depths[i],
                f"stage{i}.embed_dim": config.embed_dims[i],
                f"stage{i}.num_heads": heads.pop() if len(heads) == 1 else config.num_heads[i],
                f"stage{i}.patch_size": config.patch_size[i],
                f"stage{i}.patch_stride": config.patch_stride[i],
                f"stage{i}.kernel_qkv": config.kernel_qkv[i],
                f"stage{i}.qkv_proj_method": config.qkv_proj_method[i],
                f"stage{i}.cls_token": config.cls_token[i],
            })
            for j, spec in enumerate(config.blocks(i)):
                values[f"stage{i}.block{j:02d}.kv_stride"] = spec.stride_kv
                values[f"stage{i}.block{j:02d}.mlp_ratio"] = spec.mlp_ratio
        return values

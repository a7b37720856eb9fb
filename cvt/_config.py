"""``CvTConfig``: the per-stage (and optionally per-block) description of a CvT.

It reads and writes the reference implementation's experiment YAML (``MODEL.SPEC`` of microsoft/CvT,
keys listed in ``shared/reference/cvt.md``). Every SPEC key is a list with one entry per stage. Four
keys may instead hold, for a stage, a list with one value per block, which is how the search writes
per-block architectures such as CvT-13-NAS (paper section 4.2):

    NUM_HEADS: [1, 3, 6]                          # per stage, as the reference writes it
    STRIDE_KV: [2, [1, 1], [2, 1, 1, 1, 1, 1, 1, 1, 1, 2]]   # stage 2 per block
    MLP_RATIO: [[2.0], [4.0, 4.0], 4.0]

A per-stage YAML from the reference loads unchanged; a per-block config round-trips exactly.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from ._errors import ConfigError

__all__ = ["CvTConfig", "BlockSpec", "PROJ_METHODS", "ACT_LAYERS"]

PROJ_METHODS = ("dw_bn", "avg", "linear")
ACT_LAYERS = ("quick_gelu", "gelu")
INITS = ("trunc_norm", "xavier")

# Fields whose per-stage entry may be a scalar or a per-block sequence.
PER_BLOCK_FIELDS = ("num_heads", "mlp_ratio", "stride_kv", "stride_q")

# dataclass field -> MODEL.SPEC key, in the order the reference configs list them.
_SPEC_KEYS = {
    "patch_size": "PATCH_SIZE",
    "patch_stride": "PATCH_STRIDE",
    "patch_padding": "PATCH_PADDING",
    "embed_dims": "DIM_EMBED",
    "num_heads": "NUM_HEADS",
    "depths": "DEPTH",
    "mlp_ratio": "MLP_RATIO",
    "attn_drop_rate": "ATTN_DROP_RATE",
    "drop_rate": "DROP_RATE",
    "drop_path_rate": "DROP_PATH_RATE",
    "qkv_bias": "QKV_BIAS",
    "cls_token": "CLS_TOKEN",
    "pos_embed": "POS_EMBED",
    "qkv_proj_method": "QKV_PROJ_METHOD",
    "kernel_qkv": "KERNEL_QKV",
    "padding_kv": "PADDING_KV",
    "stride_kv": "STRIDE_KV",
    "padding_q": "PADDING_Q",
    "stride_q": "STRIDE_Q",
}
_SPEC_FIELDS = {v: k for k, v in _SPEC_KEYS.items()}
# cvt-nas extensions, written to SPEC only when they differ from the reference's behaviour.
_EXTRA_KEYS = {"act_layer": "ACT_LAYER", "in_chans": "IN_CHANS"}

_INT_FIELDS = ("patch_size", "patch_stride", "patch_padding", "embed_dims", "depths", "kernel_qkv",
               "padding_kv", "padding_q")
_FLOAT_FIELDS = ("attn_drop_rate", "drop_rate", "drop_path_rate")
_BOOL_FIELDS = ("qkv_bias", "cls_token", "pos_embed")


class BlockSpec(NamedTuple):
    """Resolved settings of one transformer block (stage ``stage``, block ``index``)."""

    stage: int
    index: int
    dim: int
    num_heads: int
    mlp_ratio: float
    stride_kv: int
    stride_q: int
    kernel_qkv: int
    padding_kv: int
    padding_q: int
    qkv_bias: bool
    proj_method: str
    with_cls_token: bool
    attn_drop: float
    drop: float
    drop_path: float


def _tuple(value: Any) -> Any:
    """Lists -> tuples, recursively, so configs are hashable and compare by value."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuple(v) for v in value)
    return value


def _listify(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_listify(v) for v in value]
    return value


def _image_size(data: dict, default: int) -> int:
    """``TRAIN.IMAGE_SIZE`` (else ``TEST.IMAGE_SIZE``, else ``default``) of a square input."""
    size = (data.get("TRAIN") or {}).get("IMAGE_SIZE", (data.get("TEST") or {}).get("IMAGE_SIZE", default))
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ConfigError(f"TRAIN.IMAGE_SIZE = {size!r}: only square inputs are supported, "
                              f"e.g. [{default}, {default}]")
        size = size[0]
    return size


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """Parsed YAML of ``path``; an unreadable file or bad YAML (with its line) is a one-line ``ConfigError``."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror or err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None


_C = TypeVar("_C", bound="YamlConfig")


def fit_width(dim: int, heads: tuple[int, ...], mult: float) -> int:
    """``dim * mult`` rounded to a multiple of every head count in ``heads`` (at least one such multiple)."""
    unit = math.lcm(*(int(h) for h in heads))
    return max(unit, round(dim * mult / unit) * unit)


class YamlConfig:
    """YAML files for a config class with ``from_dict``/``to_dict`` (``CvTConfig``, ``CCTConfig``)."""

    @classmethod
    def from_dict(cls: type[_C], data: dict) -> _C:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_yaml(cls: type[_C], path: str | Path) -> _C:
        """Read a config file; unreadable files, bad YAML and bad content are one-line ``ConfigError``s."""
        data = read_yaml(path)
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def to_yaml(self, path: str | Path | None = None, *, header: str | None = None,
                extra: dict | None = None) -> str:
        """Write (and return) the YAML of :meth:`to_dict`.

        Args:
            path: file to write; None only returns the text.
            header: text written as ``#`` comment lines above the config (provenance).
            extra: further top-level sections, e.g. ``{"NAS": {...}}``; the reference ignores them.
        """
        import yaml

        class _Dumper(yaml.SafeDumper):
            pass

        # Lists of scalars inline ([1, 2, 10]) as the reference configs write them; nesting stays inline too.
        def _list(dumper, data):
            return dumper.represent_sequence("tag:yaml.org,2002:seq", data,
                                             flow_style=all(not isinstance(x, dict) for x in data))

        _Dumper.add_representer(list, _list)
        data = self.to_dict()
        if extra:
            data.update(extra)
        text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=120)
        if header:
            text = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) + text
        if path is not None:
            Path(path).write_text(text)
        return text


@dataclass(frozen=True)
class CvTConfig(YamlConfig):
    """A CvT architecture: per-stage lists, some of which may hold per-block lists.

    Defaults are CvT-13 at 224x224 (the reference's ``cvt-13-224x224.yaml``).

    Example:
        >>> cfg = CvTConfig(depths=(1, 2, 10))
        >>> cfg.block(2, 0).num_heads
        6
    """

    # Convolutional token embedding, one entry per stage.
    patch_size: tuple = (7, 3, 3)
    patch_stride: tuple = (4, 2, 2)  # overall stride 16 at the last stage, as in ResNet-like pyramids
    patch_padding: tuple = (2, 1, 1)
    embed_dims: tuple = (64, 192, 384)
    depths: tuple = (1, 2, 10)
    # May be per block: an entry is a scalar for the whole stage or a sequence of length depths[i].
    num_heads: tuple = (1, 3, 6)
    mlp_ratio: tuple = (4.0, 4.0, 4.0)
    stride_kv: tuple = (2, 2, 2)  # K/V at a quarter of the tokens: the paper's main saving
    stride_q: tuple = (1, 1, 1)
    # Per stage only.
    attn_drop_rate: tuple = (0.0, 0.0, 0.0)
    drop_rate: tuple = (0.0, 0.0, 0.0)
    drop_path_rate: tuple = (0.0, 0.0, 0.1)
    qkv_bias: tuple = (True, True, True)
    cls_token: tuple = (False, False, True)  # only the last stage classifies from a cls token
    pos_embed: tuple = (False, False, False)  # kept for round trips; CvT uses no position embedding
    qkv_proj_method: tuple = ("dw_bn", "dw_bn", "dw_bn")
    kernel_qkv: tuple = (3, 3, 3)
    padding_kv: tuple = (1, 1, 1)
    padding_q: tuple = (1, 1, 1)
    # Whole model.
    in_chans: int = 3
    img_size: int = 224  # the training/test resolution the config was made for (TRAIN.IMAGE_SIZE)
    act_layer: str = "quick_gelu"  # the reference's x*sigmoid(1.702x); "gelu" matches HF transformers
    init: str = "trunc_norm"
    name: str = field(default="cls_cvt", compare=False)

    def __post_init__(self) -> None:
        for f in _SPEC_KEYS:
            object.__setattr__(self, f, _tuple(getattr(self, f)))
        self._validate()

    # ------------------------------------------------------------------ structure
    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def is_per_block(self) -> bool:
        """True if any stage sets a per-block value."""
        return any(isinstance(v, tuple) for f in PER_BLOCK_FIELDS for v in getattr(self, f))

    def stage_values(self, name: str, stage: int) -> tuple:
        """The per-block values of field ``name`` in ``stage`` (a scalar entry is broadcast)."""
        value = getattr(self, name)[stage]
        if isinstance(value, tuple):
            return value
        return (value,) * self.depths[stage]

    def block(self, stage: int, index: int) -> BlockSpec:
        """Resolved settings of block ``index`` of ``stage``, including its drop-path rate."""
        depth = self.depths[stage]
        rate = self.drop_path_rate[stage]
        # Per stage: linspace(0, rate, depth) over that stage's blocks (reference behaviour).
        drop_path = rate * index / (depth - 1) if depth > 1 else 0.0
        return BlockSpec(
            stage=stage,
            index=index,
            dim=self.embed_dims[stage],
            num_heads=int(self.stage_values("num_heads", stage)[index]),
            mlp_ratio=float(self.stage_values("mlp_ratio", stage)[index]),
            stride_kv=int(self.stage_values("stride_kv", stage)[index]),
            stride_q=int(self.stage_values("stride_q", stage)[index]),
            kernel_qkv=self.kernel_qkv[stage],
            padding_kv=self.padding_kv[stage],
            padding_q=self.padding_q[stage],
            qkv_bias=bool(self.qkv_bias[stage]),
            proj_method=self.qkv_proj_method[stage],
            with_cls_token=bool(self.cls_token[stage]),
            attn_drop=self.attn_drop_rate[stage],
            drop=self.drop_rate[stage],
            drop_path=drop_path,
        )

    def blocks(self, stage: int) -> list[BlockSpec]:
        return [self.block(stage, j) for j in range(self.depths[stage])]

    def grid_sizes(self, resolution: int | None = None) -> list[tuple[int, int]]:
        """Token grid (H, W) after each stage's conv embedding for a square input."""
        h = w = resolution or self.img_size
        out = []
        for k, s, p in zip(self.patch_size, self.patch_stride, self.patch_padding):
            h = (h + 2 * p - k) // s + 1
            w = (w + 2 * p - k) // s + 1
            if h < 1 or w < 1:
                raise ConfigError(
                    f"input {resolution or self.img_size}x{resolution or self.img_size} is too small: "
                    f"stage {len(out)} would have an empty token grid; use a larger resolution")
            out.append((h, w))
        return out

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        n = len(self.depths)
        if n < 1:
            raise ConfigError("MODEL.SPEC.DEPTH is empty: give one depth per stage, e.g. [1, 2, 10]")
        for f, key in _SPEC_KEYS.items():
            value = getattr(self, f)
            if not isinstance(value, tuple) or len(value) != n:
                got = len(value) if isinstance(value, tuple) else type(value).__name__
                raise ConfigError(
                    f"MODEL.SPEC.{key} has {got} entries but DEPTH has {n} stages: give one entry per stage")
        for f in _INT_FIELDS:
            for i, v in enumerate(getattr(self, f)):
                minimum = 0 if f.startswith("padding") or f == "patch_padding" else 1
                if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                    raise ConfigError(
                        f"MODEL.SPEC.{_SPEC_KEYS[f]}[{i}] = {v!r}: expected an integer >= {minimum}")
        for f in _FLOAT_FIELDS:
            for i, v in enumerate(getattr(self, f)):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                    raise ConfigError(f"MODEL.SPEC.{_SPEC_KEYS[f]}[{i}] = {v!r}: expected a rate in [0, 1)")
        for f in _BOOL_FIELDS:
            for i, v in enumerate(getattr(self, f)):
                if not isinstance(v, bool):
                    raise ConfigError(f"MODEL.SPEC.{_SPEC_KEYS[f]}[{i}] = {v!r}: expected true or false")
        for i, v in enumerate(self.qkv_proj_method):
            if v not in PROJ_METHODS:
                raise ConfigError(f"MODEL.SPEC.QKV_PROJ_METHOD[{i}] = {v!r}: unknown projection method; "
                                  f"use one of {', '.join(PROJ_METHODS)}")
        for f in PER_BLOCK_FIELDS:
            key = _SPEC_KEYS[f]
            is_ratio = f == "mlp_ratio"
            for i, entry in enumerate(getattr(self, f)):
                values = entry if isinstance(entry, tuple) else (entry,)
                if isinstance(entry, tuple) and len(entry) != self.depths[i]:
                    raise ConfigError(
                        f"MODEL.SPEC.{key}[{i}] has {len(entry)} per-block values but DEPTH[{i}] = "
                        f"{self.depths[i]}: give one value per block or a single value for the stage")
                for j, v in enumerate(values):
                    where = f"{key}[{i}][{j}]" if isinstance(entry, tuple) else f"{key}[{i}]"
                    ok = (isinstance(v, (int, float)) and v > 0) if is_ratio else (isinstance(v, int) and v >= 1)
                    if isinstance(v, bool) or not ok:
                        kind = "a positive number" if is_ratio else "an integer >= 1"
                        raise ConfigError(f"MODEL.SPEC.{where} = {v!r}: expected {kind}")
                    if f == "stride_q" and v != 1:
                        # A strided query shrinks the token grid, so the residual add has no matching
                        # shortcut (the reference code fails there too); only K/V may be squeezed.
                        raise ConfigError(
                            f"MODEL.SPEC.{where} = {v}: a query stride other than 1 changes the token count, "
                            f"which the block's residual connection cannot add; use 1 (squeeze K/V with "
                            f"STRIDE_KV instead)")
                    if f == "num_heads" and self.embed_dims[i] % v:
                        raise ConfigError(
                            f"MODEL.SPEC.{where} = {v} does not divide DIM_EMBED[{i}] = {self.embed_dims[i]}: "
                            f"use a head count that divides the stage width")
        if self.act_layer not in ACT_LAYERS:
            raise ConfigError(f"MODEL.SPEC.ACT_LAYER = {self.act_layer!r}: use one of {', '.join(ACT_LAYERS)}")
        if self.init not in INITS:
            raise ConfigError(f"MODEL.SPEC.INIT = {self.init!r}: use one of {', '.join(INITS)}")
        if isinstance(self.in_chans, bool) or not isinstance(self.in_chans, int) or self.in_chans < 1:
            raise ConfigError(f"MODEL.SPEC.IN_CHANS = {self.in_chans!r}: expected an integer >= 1")
        if isinstance(self.img_size, bool) or not isinstance(self.img_size, int) or self.img_size < 1:
            raise ConfigError(f"TRAIN.IMAGE_SIZE = {self.img_size!r}: expected a positive integer")

    # ------------------------------------------------------------------ conversion
    def replace(self, **changes: Any) -> "CvTConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def describe(self, resolution: int | None = None) -> list[str]:
        """Lines describing the architecture at ``resolution``: a per-stage table (grid, tokens, width, heads,
        depth, MLP ratios, K/V strides), then each stage's per-block choices when they vary."""
        rows = [f"{'stage':>5} {'grid':>9} {'Q tokens':>9} {'KV tokens':>10} {'dim':>5} {'heads':>7} {'depth':>5}"
                f" {'mlp ratio':>11} {'kv stride':>10}"]
        for i, (h, w) in enumerate(self.grid_sizes(resolution)):
            blocks = self.blocks(i)
            cls = int(self.cls_token[i])
            kv = sorted({((h + 2 * b.padding_kv - b.kernel_qkv) // b.stride_kv + 1)
                         * ((w + 2 * b.padding_kv - b.kernel_qkv) // b.stride_kv + 1) + cls for b in blocks})
            heads = sorted({b.num_heads for b in blocks})
            ratios = sorted({b.mlp_ratio for b in blocks})
            strides = sorted({b.stride_kv for b in blocks})
            join = lambda xs: "/".join(f"{x:g}" for x in xs)  # noqa: E731
            rows.append(f"{i:>5} {f'{h}x{w}':>9} {h * w + cls:>9} {join(kv):>10} {self.embed_dims[i]:>5} "
                        f"{join(heads):>7} {self.depths[i]:>5} {join(ratios):>11} {join(strides):>10}")
        if self.is_per_block:  # a searched architecture: its block-by-block choices, stage by stage
            for i in range(self.num_stages):
                blocks = self.blocks(i)
                rows.append(f"stage {i} blocks: kv stride {' '.join(str(b.stride_kv) for b in blocks)} | mlp ratio "
                            f"{' '.join(f'{b.mlp_ratio:g}' for b in blocks)} | heads "
                            f"{' '.join(str(b.num_heads) for b in blocks)}")
        return rows

    def scale_width(self, mult: float) -> "CvTConfig":
        """Every stage's width times ``mult``, kept a multiple of that stage's head counts."""
        return self.replace(embed_dims=tuple(fit_width(d, self.stage_values("num_heads", i), mult)
                                             for i, d in enumerate(self.embed_dims)))

    def to_spec(self) -> dict:
        """The ``MODEL.SPEC`` mapping (plain lists, YAML/JSON ready)."""
        spec: dict[str, Any] = {"INIT": self.init, "NUM_STAGES": self.num_stages}
        for f, key in _SPEC_KEYS.items():
            spec[key] = _listify(getattr(self, f))
        if self.act_layer != "quick_gelu":
            spec["ACT_LAYER"] = self.act_layer
        if self.in_chans != 3:
            spec["IN_CHANS"] = self.in_chans
        return spec

    def to_dict(self) -> dict:
        """The reference experiment layout: ``MODEL`` (NAME, SPEC) plus TRAIN/TEST image sizes."""
        size = [self.img_size, self.img_size]
        return {"MODEL": {"NAME": self.name, "SPEC": self.to_spec()},
                "TRAIN": {"IMAGE_SIZE": size}, "TEST": {"IMAGE_SIZE": list(size)}}

    @classmethod
    def from_spec(cls, spec: dict, *, img_size: int = 224, name: str = "cls_cvt") -> "CvTConfig":
        """Build from a ``MODEL.SPEC`` mapping; unknown keys are an error, missing ones take defaults."""
        if not isinstance(spec, dict):
            raise ConfigError(f"MODEL.SPEC must be a mapping of keys to per-stage lists, got {type(spec).__name__}")
        known = set(_SPEC_FIELDS) | set(_EXTRA_KEYS.values()) | {"INIT", "NUM_STAGES"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ConfigError(f"MODEL.SPEC has unknown key(s) {', '.join(unknown)}; "
                              f"known keys: {', '.join(sorted(known))}")
        kwargs: dict[str, Any] = {_SPEC_FIELDS[k]: v for k, v in spec.items() if k in _SPEC_FIELDS}
        for f, key in _EXTRA_KEYS.items():
            if key in spec:
                kwargs[f] = spec[key]
        if "INIT" in spec:
            kwargs["init"] = spec["INIT"]
        if "DEPTH" not in spec:
            raise ConfigError("MODEL.SPEC.DEPTH is missing: give one depth per stage, e.g. [1, 2, 10]")
        n = spec.get("NUM_STAGES", len(spec["DEPTH"]) if isinstance(spec["DEPTH"], list) else None)
        if not isinstance(spec["DEPTH"], list) or n != len(spec["DEPTH"]):
            raise ConfigError(f"MODEL.SPEC.NUM_STAGES = {n} but DEPTH = {spec['DEPTH']!r}: "
                              f"give one depth per stage")
        # Keys left out fall back to the reference default only when the stage count matches it.
        missing = [f for f in _SPEC_KEYS if f not in kwargs]
        if missing and n != 3:
            raise ConfigError(f"MODEL.SPEC is missing {', '.join(_SPEC_KEYS[f] for f in missing)}: "
                              f"defaults exist only for 3 stages, so give every key for {n} stages")
        return cls(img_size=img_size, name=name, **kwargs)

    @classmethod
    def from_dict(cls, data: dict) -> "CvTConfig":
        """Build from the reference experiment layout (``MODEL.SPEC``, optional ``TRAIN.IMAGE_SIZE``)."""
        if not isinstance(data, dict) or not isinstance(data.get("MODEL"), dict) or "SPEC" not in data["MODEL"]:
            raise ConfigError("expected a reference CvT config with a MODEL.SPEC section "
                              "(see experiments/cvt/cvt-13-224x224.yaml)")
        return cls.from_spec(data["MODEL"]["SPEC"], img_size=_image_size(data, 224),
                             name=data["MODEL"].get("NAME", "cls_cvt"))

    def arch_id(self) -> str:
        """Short stable hash of the architecture (drop rates and name excluded)."""
        spec = self.to_spec()
        for key in ("ATTN_DROP_RATE", "DROP_RATE", "DROP_PATH_RATE"):
            spec.pop(key)
        blob = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


"""The built-in spaces (plain data) and ``get_space``."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from cvt import UserError

from ._cct import CCTSpace
from ._cvt import CvTSpace, StageOptions
from ._space import SearchSpace
from ._yaml import load_space

__all__ = ["get_space", "list_spaces", "register_space"]


def _cvt13_nas() -> CvTSpace:
    # CvT paper section 4.2: CvT-13 with a K/V stride in {1, 2} and an MLP ratio in {2, 4} per block.
    per_block = {"kv_stride": (1, 2), "mlp_ratio": (2.0, 4.0)}
    return CvTSpace(
        name="cvt13-nas",
        description="CvT-13 skeleton; per block K/V stride {1,2} x MLP ratio {2,4} (CvT paper 4.2), 2^26 members",
        stages=(
            StageOptions(depth=1, embed_dim=64, num_heads=1, patch_size=7, patch_stride=4, **per_block),
            StageOptions(depth=2, embed_dim=192, num_heads=3, **per_block),
            StageOptions(depth=10, embed_dim=384, num_heads=6, cls_token=True, drop_path_rate=0.1, **per_block),
        ),
    )


def _cvt() -> CvTSpace:
    # Every head count divides every width of its stage, so each combination is a valid model. The
    # choices include CvT-13 (1/2/10, 64/192/384), CvT-21 (depth 16) and all of cvt13-nas.
    per_block = {"kv_stride": (1, 2), "mlp_ratio": (2.0, 3.0, 4.0), "kernel_qkv": (3, 5)}
    return CvTSpace(
        name="cvt",
        description="general 3-stage CvT: depth, width, heads, conv-embed kernel/stride, projection kernel "
                    "per stage; K/V stride and MLP ratio per block",
        stages=(
            StageOptions(depth=(1, 2), embed_dim=(32, 48, 64, 96), num_heads=(1, 2), patch_size=(3, 5, 7),
                         patch_stride=(2, 4), **per_block),
            StageOptions(depth=(1, 2, 3, 4), embed_dim=(96, 144, 192, 240, 288), num_heads=(1, 2, 3, 4, 6),
                         patch_size=(3, 5), patch_stride=(1, 2), **per_block),
            StageOptions(depth=tuple(range(4, 17)), embed_dim=(192, 288, 384, 480), num_heads=(3, 4, 6, 8, 12),
                         patch_size=(3, 5), patch_stride=(1, 2), cls_token=True, drop_path_rate=0.1, **per_block),
        ),
    )


def _cct() -> CCTSpace:
    # Every head count divides every width. Members include CCT-2/3x2, CCT-4/3x2, CCT-6/3x1, CCT-6/3x2,
    # CCT-7/3x1 and CCT-7/3x2 (at 32 px, learnable or sine position embedding).
    return CCTSpace(
        name="cct",
        description="CCT at 32 px: layers, width, heads, MLP ratio, tokenizer kernel and conv layers, "
                    "position embedding, pooling",
        num_layers=tuple(range(2, 15)), embed_dim=(128, 192, 256, 320, 384), num_heads=(2, 4, 8),
        mlp_ratio=(1.0, 2.0, 3.0, 4.0), kernel_size=(3, 5, 7), conv_layers=(1, 2),
        pos_embed=("learnable", "sine", "none"), pooling=("seqpool", "cls"), img_size=32,
    )


_BUILTIN: dict[str, Callable[[], SearchSpace]] = {"cvt13-nas": _cvt13_nas, "cvt": _cvt, "cct": _cct}
_CACHE: dict[str, SearchSpace] = {}


def register_space(name: str, factory: Callable[[], SearchSpace]) -> None:
    """Make ``get_space(name)`` return ``factory()`` (built once, on first use)."""
    _BUILTIN[name] = factory
    _CACHE.pop(name, None)


def list_spaces() -> list[str]:
    """Names of the built-in spaces."""
    return sorted(_BUILTIN)


def get_space(name_or_path: str | Path | SearchSpace) -> SearchSpace:
    """A built-in space by name, or a user-defined one from a YAML file.

    Args:
        name_or_path: ``"cvt13-nas"``, ``"cvt"``, ``"cct"``, a path to a ``.yaml``/``.yml`` space file
            (docs/search_spaces.md), or a space (returned as is).

    Raises:
        UserError: unknown name, missing file, or an invalid space file.

    Example:
        >>> get_space("cvt13-nas").cardinality() == 2 ** 26
        True
    """
    if isinstance(name_or_path, SearchSpace):
        return name_or_path
    key = str(name_or_path)
    if key in _BUILTIN:
        if key not in _CACHE:
            _CACHE[key] = _BUILTIN[key]()
        return _CACHE[key]
    path = Path(key)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if path.is_dir():
            raise UserError(f"search space {path} is a folder; give a space YAML file (e.g. "
                            f"experiments/spaces/example.yaml) or a built-in name: {', '.join(list_spaces())}")
        if not path.is_file():
            raise UserError(f"search space file {path} not found")
        return load_space(path)
    raise UserError(f"unknown search space {key!r}; built-in: {', '.join(list_spaces())}, "
                    f"or a path to a YAML space file (see docs/search_spaces.md)")

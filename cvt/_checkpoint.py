"""Loading checkpoints from the reference code, Hugging Face transformers or cvt-nas itself.

Each model family owns a ``checkpoint_filter(state_dict) -> state_dict`` method that only maps foreign
key names (and, where a family needs it, resizes tensors such as position embeddings). This module reads
the file, unwraps the usual containers, applies the filter and checks that keys and shapes match.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ._errors import CheckpointError

__all__ = ["load_checkpoint", "read_state_dict"]

_CONTAINER_KEYS = ("state_dict", "model", "model_state", "module")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a ``.safetensors`` or torch file (``weights_only``), unwrapping containers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as err:  # corrupt or foreign file: say which and why, in one line
        reason = (str(err).splitlines() or [type(err).__name__])[0]  # some errors (EOFError) have no text
        raise CheckpointError(f"cannot read checkpoint {path}: {reason}") from None
    for key in _CONTAINER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state_dict of tensors")
    # DataParallel / DDP prefixes.
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _describe(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_checkpoint(model: nn.Module, path: str | Path | dict, *, strict: bool = True) -> nn.Module:
    """Load a checkpoint into ``model`` after mapping foreign key names.

    Args:
        model: a cvt-nas model (``CvT`` or ``CCT``); its ``checkpoint_filter`` maps the keys.
        path: a checkpoint file, or an already loaded state_dict.
        strict: require exactly the model's keys (shapes must always match).

    Raises:
        CheckpointError: unreadable file, missing/unexpected keys or mismatched shapes, all listed.
    """
    state = read_state_dict(path) if not isinstance(path, dict) else dict(path)
    filter_fn = getattr(model, "checkpoint_filter", None)
    if filter_fn is not None:
        state = filter_fn(state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if shapes:
        problems.append(f"wrong shape for {_describe(shapes)}")
    if strict and missing:
        problems.append(f"missing keys {_describe(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys {_describe(unexpected)}")
    if problems:
        where = path if not isinstance(path, dict) else "state_dict"
        raise CheckpointError(f"checkpoint {where} does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=strict)
    return model

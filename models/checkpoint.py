"""State dicts <-> flat tensor maps, so models are saved as safetensors (no pickles)."""

from __future__ import annotations

from typing import Any

import torch

SEP = "/"


def flatten_state(state: dict[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested state (e.g. AT-PAML's memory in `_extra_state`) -> {'a/b/c': tensor}."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_state(value, name + SEP))
        elif isinstance(value, torch.Tensor):
            flat[name] = value.detach().cpu().contiguous()
        else:
            raise TypeError(f"state entry {name!r} is a {type(value).__name__}, not a tensor or dict")
    return flat


def unflatten_state(flat: dict[str, torch.Tensor], prefix: str = "") -> dict[str, Any]:
    """Inverse of flatten_state for the keys under `prefix`."""
    state: dict[str, Any] = {}
    for name, tensor in flat.items():
        if not name.startswith(prefix):
            continue
        *parents, leaf = name[len(prefix):].split(SEP)
        node = state
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = tensor
    return state

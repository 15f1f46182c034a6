"""CPU copies of model and optimizer state for in-memory snapshots.

A snapshot must not alias live state: the spike it guards against would damage it too. Plain
tensors are copied with ``.to("cpu", copy=True)``. Wrapper tensor subclasses (FSDP2's sharded
DTensors, torchao's 8-bit ``OptimState8bit``, also inside a DTensor) need more: ``clone`` is not
implemented by ``OptimState8bit``, and ``.to(copy=True)`` (its ``_to_copy``) returns the same inner
tensors on the same device. So a subclass is taken apart with ``__tensor_flatten__``, its inner
tensors are copied, and it is rebuilt with ``__tensor_unflatten__``, where it lives: each rank
keeps only its own shard.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass


def to_cpu(obj: Any) -> Any:
    """A deep copy of ``obj`` with every tensor cloned to the CPU; tensor subclasses are copied
    where they live (see the module docstring)."""
    if is_traceable_wrapper_subclass(obj):
        return copy_subclass(obj)
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return copy.deepcopy(obj)


def copy_subclass(t: torch.Tensor) -> torch.Tensor:
    """A copy of a wrapper tensor subclass, made of copies of its inner tensors."""
    if not torch.is_tensor(t):
        return t  # e.g. a DTensor's device mesh: shared, not state
    if not is_traceable_wrapper_subclass(t):
        return t.detach().clone()
    names, ctx = t.__tensor_flatten__()
    inner = {name: copy_subclass(getattr(t, name)) for name in names}
    return type(t).__tensor_unflatten__(inner, ctx, t.size(), t.stride())

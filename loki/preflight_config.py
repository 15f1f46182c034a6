"""Checks of a parsed ``loki fit|validate|test|predict`` config against this machine, before any
class is built (``LokiLM.__init__`` allocates the model's weights: 5.5 GB at the 1.4B size).

- an accelerator that needs a CUDA GPU on a machine without one, or more GPUs than it has;
- ``ModelParallelStrategy`` sizes whose product is not the world size (devices x nodes);
- on CPUs, a model whose training state (weights, gradients, optimizer state) plainly cannot fit
  in the memory this machine has available;
- the distillation cache the config names (a missing one would otherwise be found only after
  the model was built).
"""

from __future__ import annotations

import os
from typing import Any

from loki.errors import LokiError

GB = 1e9
CUDA_ACCELERATORS = ("gpu", "cuda")


def _get(ns: Any, key: str, default: Any = None) -> Any:
    value = ns.get(key, default) if hasattr(ns, "get") else getattr(ns, key, default)
    return default if value is None else value


def _class_path(value: Any) -> str:
    return str(_get(value, "class_path", value) if not isinstance(value, str) else value)


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_accelerator(trainer: Any) -> None:
    accelerator = str(_get(trainer, "accelerator", "auto")).lower()
    if accelerator not in CUDA_ACCELERATORS:
        return
    have, devices = _cuda_count(), _get(trainer, "devices", "auto")
    if have == 0:
        raise LokiError(f"trainer.accelerator {accelerator} but this machine has no CUDA GPU "
                        "(torch.cuda.is_available() is False); run it on a GPU machine, or set "
                        "--trainer.accelerator cpu with a config sized for CPUs "
                        "(experiments/small-cpu.yaml)")
    if isinstance(devices, int) and devices > have:
        raise LokiError(f"trainer.devices {devices} but this machine has {have} CUDA GPU(s); "
                        f"set --trainer.devices {have} (or fewer)")


def _world_size(trainer: Any) -> int | None:
    devices, nodes = _get(trainer, "devices", "auto"), int(_get(trainer, "num_nodes", 1))
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, list | tuple):
        return len(devices) * nodes
    if isinstance(devices, int) and devices > 0:
        return devices * nodes
    return None  # "auto" / -1: resolved by Lightning


def check_parallel_sizes(trainer: Any) -> None:
    strategy = _get(trainer, "strategy", "auto")
    if not _class_path(strategy).endswith("ModelParallelStrategy"):
        return
    args = _get(strategy, "init_args", {})
    dp, tp = _get(args, "data_parallel_size", "auto"), _get(args, "tensor_parallel_size", "auto")
    world = _world_size(trainer)
    nodes, devices = int(_get(trainer, "num_nodes", 1)), _get(trainer, "devices", "auto")
    if world is None or "auto" in (dp, tp):
        return  # Lightning fills in "auto" from the devices and nodes
    if int(dp) * int(tp) != world:
        raise LokiError(
            f"ModelParallelStrategy data_parallel_size {dp} x tensor_parallel_size {tp} = "
            f"{int(dp) * int(tp)} processes, but trainer.devices {devices} x trainer.num_nodes "
            f"{nodes} = {world}; set data_parallel_size to {world // int(tp) or 1} (or the "
            "devices and nodes to match), or use another --trainer.strategy")


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (``MemAvailable``), None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def _state_bytes(model: Any, precision: str) -> tuple[Any, int, str]:
    """(model config, bytes per parameter, what they hold) of the model's training state."""
    from loki.module import resolve_config

    try:
        config = resolve_config(_get(model, "config", "tiny"), None,
                                dict(_get(model, "config_overrides", {})))
    except (TypeError, ValueError) as err:
        raise LokiError(f"model.config: {err}") from None
    weight = 2 if precision.startswith(("bf16-true", "16-true")) else 4
    optimizer = _class_path(_get(model, "optimizer", "torch.optim.AdamW"))
    name = optimizer.rsplit(".", 1)[-1]
    state = 2 if "8bit" in name.lower() else 4 if name == "SGD" else 8  # Adam: 2 moments
    return config, 2 * weight + state, f"weights, gradients and {name} state"


def _activation_bytes(config: Any, data: Any, model: Any, precision: str) -> int:
    """A lower bound of what one micro-batch keeps for the backward pass: each block's input,
    and without activation checkpointing also the SwiGLU's three hidden tensors."""
    tokens = int(_get(data, "micro_batch_size", 8)) * int(_get(data, "block_size", 256))
    per_layer = config.n_embd
    if not _get(_get(model, "sharding", {}), "activation_checkpointing", False):
        per_layer += 3 * config.ffn_hidden
    width = 2 if "16" in precision else 4
    return tokens * config.n_layer * per_layer * width


def check_memory(config: Any) -> None:
    trainer, model = _get(config, "trainer", {}), _get(config, "model", {})
    accelerator = str(_get(trainer, "accelerator", "auto")).lower()
    if accelerator != "cpu" and not (accelerator == "auto" and _cuda_count() == 0):
        return
    available = available_memory()
    if available is None:
        return
    precision = str(_get(trainer, "precision", "32-true"))
    model_config, per_param, what = _state_bytes(model, precision)
    params = model_config.num_params()
    state = params * per_param
    activations = _activation_bytes(model_config, _get(config, "data", {}), model, precision)
    if state + activations > available:
        raise LokiError(
            f"training this model on CPUs needs at least {(state + activations) / GB:.1f} GB "
            f"({params / 1e9:.2f}B parameters x {per_param} bytes of {what}: "
            f"{state / GB:.1f} GB; a micro-batch's activations: {activations / GB:.1f} GB) but "
            f"this machine has {available / GB:.1f} GB of memory available; train a smaller "
            "model.config on CPUs (experiments/small-cpu.yaml) or run on GPUs")


def _local_missing(path: Any) -> bool:
    text = str(path)
    return "://" not in text and not any(c in text for c in "*?[") and not os.path.exists(text)


def check_data_paths(data: Any) -> None:
    """The token shard folders and the tokenizer the data names exist (a run made before its
    data is the usual first mistake; the other files' checks come after)."""
    sources = _get(data, "sources") or {}
    missing = [str(p) for paths in (sources.values() if isinstance(sources, dict) else [])
               for p in ([paths] if isinstance(paths, str) else paths or []) if _local_missing(p)]
    if missing:
        raise LokiError(f"token shards not found: {', '.join(missing)} (data.sources); make them "
                        "with loki tokenize (the demo's: make demo)")
    tokenizer = _get(data, "tokenizer")
    if tokenizer and str(tokenizer).removesuffix("_offline") != "cl100k_base" and _local_missing(
            tokenizer):
        raise LokiError(f"tokenizer not found: {tokenizer} (data.tokenizer); make it with "
                        "loki tokenizer prune (the demo's: make demo), or use cl100k_base")


def check_distill_cache(trainer: Any) -> None:
    for cb in _get(trainer, "callbacks", []) or []:
        if _class_path(cb).endswith("TeacherDistillation"):
            cache = _get(_get(cb, "init_args", {}), "cache")
            if cache is not None:
                from loki.distill.cache import CandidateCache

                CandidateCache.open(cache)


def check_config(config: Any, subcommand: str) -> None:
    """All of the above for one subcommand's parsed config (a jsonargparse Namespace)."""
    trainer = _get(config, "trainer", {})
    check_accelerator(trainer)
    check_parallel_sizes(trainer)
    if subcommand == "fit":
        check_memory(config)
        check_data_paths(_get(config, "data", {}))
        check_distill_cache(trainer)

"""8-bit optimizer state, int8 matmul training and FP8 training: choices and their checks.

8-bit AdamW, measured on torch 2.13 / bitsandbytes 0.50.2 / torchao 0.18 (tests/test_precision.py
and tests/test_sharding.py keep these facts honest):

- ``bitsandbytes.optim.AdamW8bit`` steps plain tensors (single device, DDP), but under FSDP2
  its fused op gets sharded DTensor parameters and fails ("got mixed torch.Tensor and DTensor";
  the FSDP problems of bitsandbytes #89/#1403/#2080 are of the same kind: its state is plain
  per-rank tensors that sharded checkpointing does not know how to shard).
- ``torchao.optim.AdamW8bit`` keeps its blockwise-quantized state as a tensor subclass wrapped in
  a DTensor with the parameter's placement, so distributed checkpoints save and restore it.

So :func:`adamw_8bit` (and the 1.4B recipe) use bitsandbytes for unsharded parameters and torchao
for FSDP2; :func:`check_optimizer` turns the bitsandbytes failure into a one-line LokiError.
torchao's optimizer wants the learning rate as a tensor; LokiLM's token schedule keeps it one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from lightning.pytorch.plugins import BitsandbytesPrecision

from loki._optional import available, require
from loki.errors import LokiError

Backend = Literal["auto", "bitsandbytes", "torchao"]


def _params(groups: Iterable[Any]) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for group in groups:
        out.extend(group["params"] if isinstance(group, dict) else [group])
    return out


def _is_dtensor(p: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(p, DTensor)


def adamw_8bit(
    params: Iterable[Any],
    lr: float = 3e-4,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    weight_decay: float = 0.1,
    backend: Backend = "auto",
) -> torch.optim.Optimizer:
    """AdamW with 8-bit (blockwise-quantized) moments.

    ``auto``: torchao when the parameters are FSDP2-sharded (DTensors) or bitsandbytes is
    missing, bitsandbytes otherwise. Parameters must already be sharded when this is called
    (Lightning calls ``configure_optimizers`` after ``configure_model``)."""
    groups = list(params)
    sharded = any(_is_dtensor(p) for p in _params(groups))
    if backend == "auto":
        backend = "torchao" if sharded or not available("bitsandbytes") else "bitsandbytes"
    if backend == "bitsandbytes":
        if sharded:
            raise LokiError(_BNB_FSDP)
        bnb = require("bitsandbytes", "gpu")
        return bnb.optim.AdamW8bit(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if backend == "torchao":
        optim = require("torchao.optim", "gpu")
        # torchao keeps lr as a tensor (so changing it does not recompile its fused step);
        # LokiLM's schedule updates it in place.
        return optim.AdamW8bit(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    raise LokiError(f"adamw_8bit backend must be auto, bitsandbytes or torchao, got {backend!r}")


class AdamW8bit(torch.optim.Optimizer):
    """:func:`adamw_8bit` in a form LightningCLI can take from YAML
    (``optimizer: {class_path: loki.precision.AdamW8bit, init_args: {lr: ...}}``).

    Constructing it returns the chosen library optimizer itself (a bitsandbytes or torchao
    ``AdamW8bit``), so checkpoints hold that library's own state."""

    def __new__(  # type: ignore[misc]
        cls,
        params: Iterable[Any],
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        backend: Backend = "auto",
    ) -> torch.optim.Optimizer:
        return adamw_8bit(params, lr, betas, eps, weight_decay, backend)


_BNB_FSDP = (
    "bitsandbytes' 8-bit optimizers cannot step FSDP2-sharded (DTensor) parameters; use "
    "loki.precision.adamw_8bit (backend auto or torchao) or torchao.optim.AdamW8bit"
)


def check_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Refuse combinations known to fail later with an obscure error (called by LokiLM after
    building the optimizer)."""
    if type(optimizer).__module__.startswith("bitsandbytes") and any(
        _is_dtensor(p) for p in _params(optimizer.param_groups)
    ):
        raise LokiError(_BNB_FSDP)


def require_cuda(feature: str) -> None:
    if not torch.cuda.is_available():
        raise LokiError(f"{feature} needs a CUDA GPU and this machine has none; remove it from "
                        "the config for CPU runs")


def require_fp8_gpu(feature: str = "FP8 training") -> None:
    """FP8 tensor cores: compute capability 8.9 (Ada) or 9.0+ (Hopper)."""
    require_cuda(feature)
    if torch.cuda.get_device_capability() < (8, 9):
        name = torch.cuda.get_device_name()
        raise LokiError(f"{feature} needs an FP8 GPU (H100, H200, L4/L40, RTX 40xx); {name} has none")


class Int8Training(BitsandbytesPrecision):
    """Int8 matmul training through Lightning's bitsandbytes plugin (int8 linear layers,
    ``dtype`` elsewhere); from YAML: ``trainer.plugins: [{class_path: loki.precision.Int8Training}]``.
    GPU only: refuses the CPU at construction, before any model is built."""

    def __init__(self, dtype: str = "bfloat16") -> None:
        require_cuda("int8 matmul training (bitsandbytes)")
        require("bitsandbytes", "gpu")
        super().__init__(mode="int8-training", dtype=getattr(torch, dtype))


def float8_filter(module: torch.nn.Module, name: str, recipe: str | None = None) -> bool:
    """Which linears run in FP8: the blocks' projections, whose dims are multiples of 16 (a
    torch._scaled_mm requirement). The LM head stays bf16: its softmax is precision-sensitive.

    With a ``recipe``, also torchao's size heuristics for it (``_auto_filter_for_recipe``, from
    its H100 tables: a matmul too small for the FP8 casts to pay off stays bf16). For
    loki-1.4b they keep every block linear in FP8 under tensorwise, and the two whose output is
    d = 2048 wide (attention out, MLP down) in bf16 under rowwise."""
    if not name.startswith("blocks."):
        return False
    if not (module.in_features % 16 == 0 and module.out_features % 16 == 0):
        return False
    if recipe is None:
        return True
    from torchao.float8 import _auto_filter_for_recipe

    return _auto_filter_for_recipe(recipe, filter_fqns=[])(module, name)


def convert_to_float8(model: torch.nn.Module, recipe: str = "tensorwise",
                      fsdp_float8_all_gather: bool = True) -> torch.nn.Module:
    """torchao float8 training for the blocks' linears, in place; parameter names do not change.
    Must run before FSDP2 sharding.

    ``tensorwise``: dynamic per-tensor scales; with ``fsdp_float8_all_gather`` FSDP2 gathers the
    weights in FP8. ``rowwise``: per-row scales (torchao's recipe; gathers stay bf16)."""
    require_fp8_gpu()
    float8 = require("torchao.float8", "gpu")
    if recipe == "tensorwise":
        config = float8.Float8LinearConfig(enable_fsdp_float8_all_gather=fsdp_float8_all_gather)
    elif recipe == "rowwise":
        config = float8.Float8LinearConfig.from_recipe_name("rowwise")
    else:
        raise LokiError(f"float8 recipe must be tensorwise or rowwise, got {recipe!r}")
    return float8.convert_to_float8_training(
        model, module_filter_fn=lambda module, name: float8_filter(module, name, recipe),
        config=config)


def precompute_float8_scales(model: torch.nn.Module) -> None:
    """FP8 weight scales for FSDP2's FP8 all-gathers, all in one reduction (torchao's
    ``precompute_float8_dynamic_scale_for_fsdp``). Without them each weight's gather finds its
    own scale, with a collective of its own: 120 small reductions per gather for loki-1.4b.
    Call whenever the weights have changed before a forward: ``LokiLM`` does so at the start of
    every training step (after the last optimizer step, a rollback or a resume) and before
    validation. A no-op for models without FP8 linears or without FSDP2's FP8 gathers."""
    if not getattr(model, "_loki_float8", False):
        return
    from torchao.float8 import precompute_float8_dynamic_scale_for_fsdp

    precompute_float8_dynamic_scale_for_fsdp(model)

"""FSDP2 sharding of a ``Loki`` model, per-block activation checkpointing and compilation
(``loki.consolidate`` merges the distributed checkpoints it leads to into one file).

The cluster path is Lightning's ``ModelParallelStrategy`` (FSDP2 ``fully_shard`` on a device
mesh): ``LokiLM.configure_model`` calls :func:`configure_loki`, which shards every ``Block`` and
then the root, so each block's parameters are all-gathered just before it runs and freed after.
DDP stays the simple path; there :func:`configure_loki` only applies checkpointing/compilation.

Neither option renames parameters: checkpointing replaces the block's ``forward`` on the instance
and compilation uses ``nn.Module.compile`` (in place), so state-dict keys stay ``blocks.0.attn...``
and every checkpoint loads into a plain ``Loki``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn as nn

from loki.errors import LokiError
from loki.model import Block, Loki

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")


@dataclass
class ShardingConfig:
    """How ``LokiLM.configure_model`` prepares the model for the strategy it runs under."""

    param_dtype: str | None = "bfloat16"
    """FSDP2: dtype parameters are all-gathered in and compute runs in (fp32 master copies stay
    sharded); ``None`` keeps the stored dtype. Ignored without FSDP2 (use trainer precision)."""
    reduce_dtype: str | None = "float32"
    """FSDP2: dtype of the gradient reduce-scatter; fp32 so that small per-rank gradients of a
    bf16 model are not rounded away when averaged."""
    reshard_after_forward: bool = True
    """FSDP2: free each block's gathered parameters after forward (ZeRO-3); False keeps them
    until backward (ZeRO-2 like: more memory, one all-gather less per step)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward instead of storing them."""
    compile: bool = False
    """``torch.compile`` the model, in place (see ``compile_scope``)."""
    compile_scope: Literal["blocks", "model"] = "blocks"
    """What one compiled graph covers: ``blocks`` (each block; compiles once, since all blocks
    share their code) or ``model`` (the whole forward with the chunked LM-head loss; graphs
    break at FSDP2's hooks). ``benchmarks/gpu_step.py`` measures both."""
    compile_mode: str = "default"
    """Inductor's effort: ``default``, or ``max-autotune-no-cudagraphs`` (benchmarks Triton
    matmul templates against cuBLAS per shape and fuses epilogues; compiles for minutes). Modes
    with CUDA graphs are refused: they do not compose with FSDP2's hooks."""
    float8: bool = False
    """Train the blocks' linear layers in FP8 with torchao (H100/H200); refuses other devices."""
    float8_recipe: Literal["tensorwise", "rowwise"] = "tensorwise"
    """torchao FP8 scaling: ``tensorwise`` (one scale per tensor; allows the FP8 all-gather)
    or ``rowwise`` (one scale per row; more accurate, its gathers stay bf16)."""
    float8_all_gather: bool = True
    """FSDP2 all-gathers FP8 weights (half the traffic of bf16); ``tensorwise`` only."""

    def __post_init__(self) -> None:
        for name in ("param_dtype", "reduce_dtype"):
            value = getattr(self, name)
            if value is not None and value not in _DTYPES:
                raise LokiError(
                    f"sharding.{name} must be one of {', '.join(_DTYPES)} or null, got {value!r}"
                )
        if self.compile_scope not in ("blocks", "model"):
            raise LokiError(f"sharding.compile_scope must be blocks or model, "
                            f"got {self.compile_scope!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise LokiError(f"sharding.compile_mode must be one of {', '.join(COMPILE_MODES)}, "
                            f"got {self.compile_mode!r}")
        if self.float8_recipe not in ("tensorwise", "rowwise"):
            raise LokiError(f"sharding.float8_recipe must be tensorwise or rowwise, "
                            f"got {self.float8_recipe!r}")


# LokiLM saves its init arguments in every checkpoint; let weights-only loading (Lightning's
# default when resuming) accept this config instead of refusing the checkpoint.
torch.serialization.add_safe_globals([ShardingConfig])


def mixed_precision_policy(config: ShardingConfig) -> Any:
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(
        param_dtype=_DTYPES[config.param_dtype] if config.param_dtype else None,
        reduce_dtype=_DTYPES[config.reduce_dtype] if config.reduce_dtype else None,
    )


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def checkpoint_block(block: Block) -> None:
    """Recompute ``block``'s activations in backward (non-reentrant, so it composes with FSDP2's
    hooks around the block and with a KV cache, which only exists at inference)."""
    from torch.utils.checkpoint import checkpoint

    if getattr(block, "_loki_checkpointed", False):
        return
    forward = block.forward

    @functools.wraps(forward)
    def checkpointed(*args: Any, **kwargs: Any) -> torch.Tensor:
        if not (block.training and torch.is_grad_enabled()):
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    block.forward = checkpointed  # instance attribute: parameter names do not change
    block._loki_checkpointed = True


def shard_model(
    model: Loki,
    device_mesh: Any | None,
    mp_policy: Any | None = None,
    activation_checkpointing: bool = False,
    compile: bool = False,
    reshard_after_forward: bool = True,
    compile_backend: str = "inductor",
    compile_scope: str = "blocks",
    compile_mode: str = "default",
) -> Loki:
    """Apply checkpointing and compilation per block, then FSDP2 per block and on the root
    (whole-model compilation, ``compile_scope="model"``, comes last, over the sharded model).

    ``device_mesh`` is a 1-D data-parallel mesh (``None``: do not shard). Order matters: the
    FSDP2 hooks must wrap the checkpointed/compiled block so that backward's recomputation sees
    gathered parameters. The root is sharded last so the embedding, final norm and LM head form
    one extra group; the last block is not resharded after forward because backward starts there.
    """
    # Only the inductor backend has modes; "default" is passed as no mode at all.
    options = {"mode": compile_mode} if compile_mode != "default" else {}
    for block in model.blocks:
        if activation_checkpointing:
            checkpoint_block(block)
        if compile and compile_scope == "blocks" and not getattr(block, "_loki_compiled", False):
            block.compile(backend=compile_backend, **options)
            block._loki_compiled = True
    if device_mesh is not None and not is_sharded(model):
        _fully_shard(model, device_mesh, mp_policy, reshard_after_forward)
    if compile and compile_scope == "model" and not getattr(model, "_loki_compiled", False):
        model.compile(backend=compile_backend, **options)
        model._loki_compiled = True
    return model


def _fully_shard(model: Loki, device_mesh: Any, mp_policy: Any | None,
                 reshard_after_forward: bool) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp_policy = mp_policy or MixedPrecisionPolicy()
    last = len(model.blocks) - 1
    for i, block in enumerate(model.blocks):
        fully_shard(block, mesh=device_mesh, mp_policy=mp_policy,
                    reshard_after_forward=reshard_after_forward and i < last)
    fully_shard(model, mesh=device_mesh, mp_policy=mp_policy, reshard_after_forward=False)


def configure_loki(model: Loki, config: ShardingConfig | None, device_mesh: Any | None) -> Loki:
    """What ``LokiLM.configure_model`` does: shard under ``ModelParallelStrategy`` (its mesh has a
    ``data_parallel`` dimension), otherwise only checkpointing/compilation. Idempotent, since
    Lightning may call ``configure_model`` again (fit, then validate)."""
    config = config or ShardingConfig()
    if config.float8 and not getattr(model, "_loki_float8", False):
        from loki.precision import convert_to_float8

        # before sharding: FSDP2 then all-gathers in FP8 (tensorwise with float8_all_gather)
        convert_to_float8(model, config.float8_recipe, config.float8_all_gather)
        model._loki_float8 = True
    mesh = None
    if device_mesh is not None:
        names = device_mesh.mesh_dim_names or ()
        if "tensor_parallel" in names and device_mesh["tensor_parallel"].size() > 1:
            raise LokiError("Loki has no tensor-parallel plan; set tensor_parallel_size: 1")
        mesh = device_mesh["data_parallel"] if "data_parallel" in names else device_mesh
    return shard_model(
        model, mesh, mixed_precision_policy(config) if mesh is not None else None,
        config.activation_checkpointing, config.compile, config.reshard_after_forward,
        compile_scope=config.compile_scope, compile_mode=config.compile_mode,
    )


@contextlib.contextmanager
def gradient_sync(wrapped: nn.Module | None, model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient reduction on all but the last accumulated micro-batch.

    DDP: ``no_sync()`` on the wrapper Lightning made (``trainer.model``). FSDP2: the sharded
    model itself, ``set_requires_gradient_sync(False)`` (its gradients then accumulate unsharded
    until the last micro-batch reduce-scatters them) and ``set_reshard_after_backward(False)``:
    the parameters gathered for one micro-batch's backward stay gathered for the next
    micro-batch, instead of being freed and gathered again; the last micro-batch frees them."""
    if enabled:
        if is_sharded(model):
            model.set_requires_gradient_sync(True)
            model.set_reshard_after_backward(True)
        yield
    elif isinstance(wrapped, nn.parallel.DistributedDataParallel):
        with wrapped.no_sync():
            yield
    elif is_sharded(model):
        model.set_requires_gradient_sync(False)
        model.set_reshard_after_backward(False)
        yield
    else:
        yield


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A DTensor (e.g. the grad norm of sharded gradients) as a plain tensor; others unchanged."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value

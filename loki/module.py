"""``LokiLM``: the LightningModule that wraps the plain ``Loki`` model.

It owns the loss, the optimizer's parameter groups and the token-counted learning rate. Data
order belongs to the DataModule, and distillation, rollback and evaluation live in callbacks that
use the small surface documented here:

- ``loss_on(micro_batch, objective=None)``: scalar loss of one micro-batch.
- ``register_objective(kind, fn)``: step batches whose ``"kind"`` is not ``"lm"`` are scored by
  ``fn(pl_module, micro_batch) -> (loss, metrics)``.
- ``tokens_seen``: global training tokens so far (saved in checkpoints).
- ``last_train_loss``: the last plain-LM step's loss, averaged over ranks, as a float (reading
  it waits for the device); ``last_train_loss_tensor``: the same as a 0-dim tensor on the
  training device; ``last_train_loss_copy``: the same on its way to the host
  (``loki.host_copy.HostCopy``), for callbacks that must not synchronize every step.

It logs ``train/loss`` on plain LM steps only (a distillation step logs ``train/<kind>_loss`` and
its objective's metrics instead; no row repeats an earlier step's value: ``loki.step_logging``),
and the LR, tokens seen and micro-batches every step, all without reading the GPU: numbers known
on the host go in as CPU tensors, and the progress bar's ``loss`` is a step or so late, copied
back without waiting (``loki.host_copy``).

Optimization is manual so that one training step is one optimizer step over a variable number
of accumulated micro-batches (batch-size warmup grows that number, never the micro-batch).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torchmetrics.text import Perplexity

from loki.checkpoint_read import (
    checkpoint_config,
    loki_state_dict,
    read_checkpoint,
    resolve_checkpoint,
)
from loki.config import LokiConfig
from loki.cpu import warm_up_vector_math
from loki.errors import LokiError
from loki.flops import forward_flops, training_flops
from loki.host_copy import HostCopy
from loki.model import Loki
from loki.precision import check_optimizer, precompute_float8_scales
from loki.schedule import TokenCosineSchedule
from loki.sharding import ShardingConfig, configure_loki, full_tensor, gradient_sync
from loki.step_logging import forget_previous_step, host_scalar

# Init arguments are saved in checkpoints; distributed (FSDP2) checkpoints are resumed with
# weights-only loading, which refuses classes that are not allow-listed.
torch.serialization.add_safe_globals([LokiConfig, TokenCosineSchedule])

Objective = Callable[["LokiLM", dict[str, Any]], tuple[torch.Tensor, dict[str, float]]]


def default_optimizer(params: Iterable) -> torch.optim.Optimizer:
    """AdamW as in most 1B-scale recipes; replace it from YAML with any optimizer class."""
    return torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


def resolve_config(
    config: str | LokiConfig | dict, vocab_size: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> LokiConfig:
    """A named size, a dict of fields or a LokiConfig, with overrides and the data's vocab."""
    if isinstance(config, str):
        base = LokiConfig.from_name(config).to_dict()
    elif isinstance(config, LokiConfig):
        base = config.to_dict()
    else:
        base = dict(config)
    base.update(overrides or {})
    if vocab_size is not None:
        base["vocab_size"] = vocab_size
    return LokiConfig(**base)


class LokiLM(L.LightningModule):
    def __init__(
        self,
        config: str | LokiConfig = "tiny",
        config_overrides: dict[str, Any] | None = None,
        vocab_size: int | None = None,
        tokenizer: str | None = None,
        optimizer: OptimizerCallable = default_optimizer,
        lr_schedule: TokenCosineSchedule | None = None,
        grad_clip: float | None = 1.0,
        no_decay_embeddings: bool = True,
        sharding: ShardingConfig | None = None,
    ) -> None:
        """
        Args:
            config: a named size ("tiny", "small", "loki-1.4b") or the full model config.
            config_overrides: fields changed on top of ``config`` (e.g. ``{dropout: 0.1}``).
            vocab_size: set from the DataModule's tokenizer by ``loki fit``; overrides the config.
            tokenizer: the tokenizer spec the data was made with (kept for eval and generation).
            optimizer: optimizer class and arguments; gets two parameter groups (decay, no decay).
            lr_schedule: warmup and cosine decay counted in tokens (default: constant LR).
            grad_clip: max global gradient norm (None: no clipping).
            no_decay_embeddings: exclude the token embedding from weight decay.
            sharding: FSDP2 mixed precision, activation checkpointing and compilation, applied
                in ``configure_model`` (see ``loki.sharding``).
        """
        super().__init__()
        warm_up_vector_math()  # before any model code: exact resume on the CPU (see loki.cpu)
        self.save_hyperparameters(ignore=["optimizer"])
        self.automatic_optimization = False
        try:
            self.config = resolve_config(config, vocab_size, config_overrides)
        except (TypeError, ValueError) as err:  # unknown name or field, bad combination
            raise LokiError(f"model.config: {err}") from None
        self.model = Loki(self.config)
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_schedule or TokenCosineSchedule()
        self.grad_clip = grad_clip
        self.no_decay_embeddings = no_decay_embeddings
        self.sharding = sharding or ShardingConfig()
        # Read by Lightning's ThroughputMonitor after each batch: FLOPs this rank just did.
        self.flops_per_batch = 0
        self.val_ppl = Perplexity(ignore_index=-100)
        self.tokens_seen = 0
        self.last_train_loss_tensor: torch.Tensor | None = None
        self.last_train_loss_copy: HostCopy | None = None
        self._loss_copies: deque[HostCopy] = deque(maxlen=8)  # for the progress bar, in flight
        self._objectives: dict[str, Objective] = {}
        self._peak_lrs: list[float] = []

    # ----------------------------------------------------------------- surface for callbacks
    def register_objective(self, kind: str, fn: Objective) -> None:
        """Score step batches whose ``"kind"`` is ``kind`` with ``fn`` instead of plain CE."""
        if kind == "lm":
            raise ValueError("the 'lm' objective is the model's own cross-entropy")
        self._objectives[kind] = fn

    @property
    def last_train_loss(self) -> float | None:
        loss = self.last_train_loss_tensor
        return None if loss is None else float(loss)

    def loss_on(self, batch: dict[str, Any], objective: str | None = None) -> torch.Tensor:
        """Scalar loss of one micro-batch (tensors shaped (B, T)) under ``objective``
        (default: the batch's own ``"kind"``, plain next-token cross-entropy for ``"lm"``).
        The LM loss comes from the chunked head + cross-entropy: no full logits are kept."""
        kind = objective or batch.get("kind", "lm")
        if kind == "lm":
            _, loss = self.model(batch["input_ids"], batch["labels"], return_logits=False)
            return loss
        return self._objective(kind)(self, batch)[0]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)[0]

    def configure_model(self) -> None:
        """FSDP2 per block under ModelParallelStrategy (its device mesh); checkpointing and
        compilation options under any strategy. Idempotent."""
        configure_loki(self.model, self.sharding, self.device_mesh)

    # ----------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        kind = batch.get("kind", "lm")
        forget_previous_step(self.trainer)  # the row of this step holds only what it logs
        micro_batches = list(_split_micro_batches(batch))
        step_tokens = sum(mb["input_ids"].numel() for mb in micro_batches)
        self.flops_per_batch = sum(
            training_flops(self.config, mb["input_ids"].numel(), mb["input_ids"].size(-1))
            for mb in micro_batches
        )
        # The one token clock: LokiDataModule says what a step adds (ground-truth tokens; for a
        # distillation step its ground-truth continuations), the same count its warmup, mixture
        # and max_tokens use. Batches from elsewhere count their input tokens on every rank.
        clock = batch.get("tokens")
        self.tokens_seen += int(clock) if clock is not None else step_tokens * self.trainer.world_size
        lr = self._set_lr(opt)
        precompute_float8_scales(self.model)  # FP8 all-gathers: this step's weight scales

        total = torch.zeros((), device=self.device)
        metrics: dict[str, float] = {}
        for i, micro in enumerate(micro_batches):
            is_last = i == len(micro_batches) - 1
            with self._grad_sync(enabled=is_last):
                if kind == "lm":
                    loss = self.loss_on(micro)
                else:
                    loss, metrics = self._objective(kind)(self, micro)
                self.manual_backward(loss / len(micro_batches))
            total += loss.detach()
        loss = total / len(micro_batches)

        grad_norm = None
        if self.grad_clip is not None:
            # Sharded (DTensor) gradients give a DTensor norm: the global norm, made plain to log.
            grad_norm = full_tensor(
                torch.nn.utils.clip_grad_norm_(self.parameters(), self.grad_clip)
            )
        opt.step()
        opt.zero_grad(set_to_none=True)

        self.log("trainer/tokens_seen", host_scalar(self.tokens_seen), on_step=True,
                 reduce_fx="max")
        self.log("train/lr", host_scalar(lr), on_step=True)
        self.log("train/micro_batches", host_scalar(len(micro_batches)), on_step=True)
        if grad_norm is not None:
            self.log("train/grad_norm", grad_norm.float(), on_step=True)
        if kind == "lm":
            # The plain LM loss only: distillation losses are minima over candidates, biased low.
            # stays on the device: a float() here would wait for the GPU every step
            reduced = self.trainer.strategy.reduce(loss, reduce_op="mean")
            self.last_train_loss_tensor = reduced.detach()
            self.last_train_loss_copy = HostCopy(reduced)
            self.log("train/loss", reduced, on_step=True)
            self._show_loss(self.last_train_loss_copy)
        else:
            self.log(f"train/{kind}_loss", loss, on_step=True, sync_dist=True)
            for name, value in metrics.items():
                self.log(f"{kind}/{name}", value, on_step=True, sync_dist=True)
        return loss

    def _show_loss(self, loss: HostCopy) -> None:
        """The progress bar's ``loss``: the newest LM loss already on the host, one step or so
        late on a GPU. Lightning turns progress-bar values into numbers after every batch, so a
        device tensor there would drain the GPU's queue every step."""
        self._loss_copies.append(loss)
        shown = None
        while self._loss_copies and self._loss_copies[0].ready():
            shown = self._loss_copies.popleft()
        if shown is not None:
            self.log("loss", shown.tensor(), on_step=True, prog_bar=True, logger=False)

    def _objective(self, kind: str) -> Objective:
        if kind not in self._objectives:
            raise LokiError(
                f"a step batch of kind {kind!r} arrived but no objective is registered for it; "
                f"known: lm, {', '.join(self._objectives) or '(none)'}"
            )
        return self._objectives[kind]

    def _set_lr(self, opt: torch.optim.Optimizer) -> float:
        """Sets every group's LR for ``tokens_seen``; returns the first group's.

        Peaks come from the optimizer as configured, not from its param groups: a distributed
        (FSDP2) checkpoint restores only the standard group keys, so a peak stored there would
        be lost on resume and the already-decayed LR taken as the new peak."""
        factor = self.lr_schedule.factor(self.tokens_seen)
        for group, peak in zip(opt.param_groups, self._peak_lrs):
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(peak * factor)  # torchao's 8-bit AdamW wants a tensor LR
            else:
                group["lr"] = peak * factor
        return self._peak_lrs[0] * factor

    @contextlib.contextmanager
    def _grad_sync(self, enabled: bool) -> Iterator[None]:
        """Skip the gradient reduction on all but the last micro-batch (DDP and FSDP2)."""
        with gradient_sync(self.trainer.model, self.model, enabled):
            yield

    # ----------------------------------------------------------------- validation
    def on_validation_start(self) -> None:
        precompute_float8_scales(self.model)  # the weights moved since the step's own scales

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits, loss = self.model(batch["input_ids"], batch["labels"])
        ids = batch["input_ids"]
        self.flops_per_batch = forward_flops(self.config, ids.numel(), ids.size(-1))
        self.val_ppl.update(logits.float(), batch["labels"])
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        self.log("val/ppl", self.val_ppl, prog_bar=False)
        return loss

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        _, loss = self.model(batch["input_ids"], batch["labels"])
        self.log("test/loss", loss, sync_dist=True)
        return loss

    # ----------------------------------------------------------------- optimizer
    def parameter_groups(self) -> list[dict[str, Any]]:
        """Weight decay on matrices; none on norms (and on the embedding by default)."""
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            skip = p.ndim < 2 or (self.no_decay_embeddings and name.startswith("wte."))
            (no_decay if skip else decay).append(p)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = self.optimizer_factory(self.parameter_groups())
        check_optimizer(optimizer)  # e.g. bitsandbytes 8-bit state cannot hold FSDP2 shards
        self._peak_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        return optimizer

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["loki"] = {"tokens_seen": self.tokens_seen, "config": self.config.to_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokens_seen = int(checkpoint.get("loki", {}).get("tokens_seen", 0))


def _split_micro_batches(batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A step batch holds tensors with the accumulation axis first: (A, B, ...). Yield the A
    micro-batches; a plain (B, T) batch is one micro-batch."""
    if batch["input_ids"].dim() == 2:
        yield batch
        return
    n = batch["input_ids"].size(0)
    for i in range(n):
        yield {k: (v[i] if torch.is_tensor(v) and v.dim() > 0 and v.size(0) == n else v)
               for k, v in batch.items()}


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[Loki, LokiConfig, dict]:
    """The bare ``Loki`` module from a Lightning checkpoint, for tools and notebooks.

    Returns (model in eval mode, its config, the checkpoint's hyper-parameters). A run folder
    stands for its last checkpoint (``resolve_checkpoint``); a distributed checkpoint folder
    (FSDP2) is consolidated into a temporary file first. Anything that is not
    a checkpoint of a ``LokiLM`` is a one-line LokiError (see ``loki.checkpoint_read``)."""
    warm_up_vector_math()  # the same bits in every process (see loki.cpu)
    path = resolve_checkpoint(path)
    if path.is_dir():
        import tempfile

        from loki.consolidate import consolidate

        with tempfile.TemporaryDirectory() as tmp:
            return load_model(consolidate(path, Path(tmp) / "consolidated.ckpt"), map_location)
    ckpt = read_checkpoint(path, map_location)
    config = checkpoint_config(ckpt, path)
    model = Loki(config)
    model.load_state_dict(loki_state_dict(ckpt, model, path))
    return model.eval(), config, ckpt.get("hyper_parameters") or {}

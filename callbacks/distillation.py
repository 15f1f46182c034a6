"""``TeacherDistillation``: every Nth training batch is a distillation batch.

The DataModule owns data order, so the callback does not swap batches itself: in ``setup`` it
hands the DataModule a step builder (``attach_interleave("distill", every_n, DistillSteps)``),
and step ``s`` (0-based global step, the same on every rank) is a distillation step when
``(s + 1) % every_n == 0``. The builder is a pure function of the step's planned layout
(index, prompt position, size, reseeds), which the DataModule keeps in its own checkpointed
state, so resuming at any step (a multiple of N or not) continues the same sequence of batches,
and a loss-spike rollback's reseed re-permutes the prompts not consumed yet; the callback's
``state_dict`` keeps the cache cursor and the running per-source totals as well, and checks the
cache on resume.

A distillation step has A_d micro-batches of P prompts x k candidates, with P picked so that a
micro-batch holds about as many tokens as an LM micro-batch (B x T ~ P x k x T_c), and A_d
following the LM batch-size warmup so that both steps carry the same tokens on the one token
clock (``loki.distill.steps.DistillSteps``). The objective (``loki.distill.objective``) is registered with the
module under kind "distill"; its metrics stay on the device (no host sync per step).
``LokiLM`` logs ``train/loss`` from LM steps only; the min over candidates is biased low.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from loki import atomic
from loki.distill.cache import CandidateCache
from loki.distill.leaks import generate_checked
from loki.distill.objective import MinCEConfig, candidate_metrics, min_ce_loss
from loki.distill.steps import KIND, DistillSteps
from loki.distill.teachers import LokiTeacher
from loki.errors import LokiError

log = logging.getLogger(__name__)


class TeacherDistillation(Callback):
    def __init__(
        self,
        cache: str,
        every_n_batches: int = 4,
        prompts_per_micro_batch: int | None = None,
        accumulation: int | None = None,
        normalize: Literal["byte", "token"] = "byte",
        softmin_temperature: float = 0.0,
        softmin_anneal_steps: int = 0,
        online_teachers: list[LokiTeacher] | None = None,
        seed: int = 0,
        summary_file: str | None = "distill_summary.json",
        selection: Literal["ce", "kl"] = "ce",
        kd_weight: float = 1.0,
        decontam_index: str | None = None,
        max_tries: int | None = None,
    ) -> None:
        """
        Args:
            cache: folder of a candidate cache built by ``loki distill build``.
            every_n_batches: every Nth optimizer step is a distillation step (the paper: 4).
            prompts_per_micro_batch: prompts P per micro-batch; default keeps the tokens of a
                micro-batch close to an LM one: round(B x T / (k x T_c)), at least 1.
            accumulation: micro-batches per distillation step; None (default) follows the LM
                batch-size warmup: A_d = round(A x B x T / (P x C)), so a distillation step
                carries as many (ground-truth) tokens as the LM step at the same point.
            normalize: candidate loss per UTF-8 byte ("byte", default: short candidates do not
                win for being short) or per token.
            softmin_temperature: > 0 replaces the hard minimum by a softmin at this temperature
                (nats per byte/token), annealed linearly to 0 over ``softmin_anneal_steps``.
            softmin_anneal_steps: distillation steps of the anneal (0: constant temperature).
            online_teachers: Loki checkpoints sharing the student's tokenizer that add one
                candidate each per prompt during training (sampled on the training device),
                checked and regenerated like the cache build's candidates.
            seed: order of the cache's prompts (independent of the data seed).
            summary_file: per-source totals written at the end of fit into the trainer's log
                folder (None: not written).
            selection: "ce" (default): candidates compared by student CE per byte, soft targets
                add a KD term on the winner; "kl": soft-target positions score KL in the minimum.
            kd_weight: weight of that KD term.
            decontam_index: benchmark index for online teachers' candidates (default: the one
                the cache was built with); online teachers without any index are refused.
            max_tries: generations per online candidate before it is dropped (default: the
                cache build's ``decontam.max_tries``).
        """
        super().__init__()
        if every_n_batches < 2:
            raise LokiError("TeacherDistillation.every_n_batches must be >= 2")
        if ((accumulation is not None and accumulation < 1)
                or (prompts_per_micro_batch is not None and prompts_per_micro_batch < 1)):
            raise LokiError("TeacherDistillation accumulation and prompts_per_micro_batch must "
                            "be >= 1")
        self.cache_path, self.every_n = str(cache), every_n_batches
        self.prompts, self.accumulation, self.seed = prompts_per_micro_batch, accumulation, seed
        try:
            self.objective_config = MinCEConfig(normalize, softmin_temperature,
                                                softmin_anneal_steps, selection, kd_weight)
        except ValueError as err:
            raise LokiError(f"TeacherDistillation: {err}") from err
        self.online_teachers = list(online_teachers or [])
        self.decontam_index, self.max_tries = decontam_index, max_tries
        self.summary_file = summary_file
        self.cache: CandidateCache | None = None
        self.steps: DistillSteps | None = None
        self.names: list[str] = []
        self.distill_steps = 0
        self.cursor = 0
        self._totals: torch.Tensor | None = None  # (sources + 1, 4) on the device, no syncs
        self._saved_totals: dict[str, list[float]] = {}
        self.online_report: dict[str, dict[str, int]] = {}
        self.index = None
        self._loaded: dict[str, Any] | None = None

    # ------------------------------------------------------------------ wiring
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "attach_interleave"):
            raise LokiError("TeacherDistillation needs a DataModule with attach_interleave "
                            "(LokiDataModule): it decides which steps are distillation steps")
        self.cache = CandidateCache.open(self.cache_path, getattr(dm, "vocab_hash", None))
        self.names = self.cache.sources + [t.name for t in self.online_teachers]
        if self.online_teachers:
            self._setup_leak_check()
        for teacher in self.online_teachers:
            self._check_online(teacher, pl_module)
        if self.prompts is None:
            k, tc = len(self.names), self.cache.seq_len
            self.prompts = max(1, round(dm.micro_batch_size * dm.block_size / (k * tc)))
        self.steps = DistillSteps(self.cache_path, self.prompts, self.accumulation,
                                  trainer.global_rank, trainer.world_size, self.seed,
                                  dm.micro_batch_size * dm.block_size)
        dm.attach_interleave(KIND, self.every_n, self.steps)
        pl_module.register_objective(KIND, self.objective)
        if self._loaded is not None:
            self._check_resume(self._loaded)

    def _setup_leak_check(self) -> None:
        """Online candidates reach the loss: they get the cache build's check-and-regenerate."""
        from loki.distill.leaks import load_index
        from loki.tokenizer import LokiTokenizer

        built = self.cache.manifest.get("decontam") or {}
        path = self.decontam_index or built.get("index")
        if not path:
            raise LokiError("TeacherDistillation: online teachers need a benchmark index; set "
                            "decontam_index (the .npz from `loki filter`), or build the cache "
                            "with decontam.index")
        self.index = load_index(path)
        self.max_tries = self.max_tries or int(built.get("max_tries", 3))
        self._student = LokiTokenizer.from_spec(self.cache.manifest["student"]["tokenizer"])

    def _check_online(self, teacher: LokiTeacher, pl_module: L.LightningModule) -> None:
        model = teacher.load()
        if model.config.vocab_size != pl_module.model.config.vocab_size:
            raise LokiError(f"online teacher {teacher.name} has vocab_size "
                            f"{model.config.vocab_size}, the student "
                            f"{pl_module.model.config.vocab_size}: online teachers must share the "
                            "student's tokenizer (use it offline through the cache instead)")
        if self.cache.token_bytes is None:
            raise LokiError(f"cache {self.cache_path} has no token_bytes.npy (needed to "
                            "normalize online candidates per byte); rebuild it")
        teacher.eot_id = self.cache.manifest["student"]["eot_id"]
        teacher.device = str(pl_module.device)
        model.to(pl_module.device)

    # ------------------------------------------------------------------ the objective
    def objective(self, pl_module: L.LightningModule, micro: dict[str, Any],
                  ) -> tuple[torch.Tensor, dict[str, float]]:
        if self.online_teachers:
            micro = self._add_online_candidates(micro, pl_module.device)
        ids = micro["input_ids"]  # (P, k, T)
        P, k, T = ids.shape
        logits, _ = pl_module.model(ids.reshape(P * k, T))  # (P*k, T, V)
        logits = logits.view(P, k, T, -1)
        index = int(micro.get("distill_index", self.distill_steps))
        result = min_ce_loss(logits, micro, self.objective_config,
                             self.objective_config.temperature(index))
        metrics, counts = candidate_metrics(result, micro["source"], self.names)
        totals = self._running_totals(logits.device)
        totals[:-1] += counts
        totals[-1, 1] += metrics["samples"].double()
        samples = totals[-1, 1].clamp(min=1)
        column = 2 if self.objective_config.selection == "ce" else 3
        for i, name in enumerate(self.names):
            metrics[f"win_rate_total/{name}"] = totals[i, column] / samples
        return result.loss, metrics

    def _running_totals(self, device: torch.device) -> torch.Tensor:
        """(sources + 1, 4): loss sum, candidates, wins under "ce", wins under "kl"; the last
        row's second column counts samples. Kept on the device: read only at save and end."""
        if self._totals is None or self._totals.device != device:
            rows = [self._saved_totals.get(n, [0.0, 0, 0, 0]) for n in self.names + ["_samples"]]
            rows = [(list(r) + [0, 0, 0, 0])[:4] for r in rows]
            self._totals = torch.tensor(rows, dtype=torch.float64, device=device)
        return self._totals

    @property
    def totals(self) -> dict[str, list[float]]:
        """Running per-source totals (a host copy: loss sum, candidates, wins ce, wins kl)."""
        if self._totals is None:
            return dict(self._saved_totals)
        rows = self._totals.cpu().tolist()
        return {n: rows[i] for i, n in enumerate(self.names + ["_samples"])}

    def _add_online_candidates(self, micro: dict[str, Any], device: torch.device) -> dict:
        """One more candidate per online teacher, sampled now from the shared prompt."""
        ids = micro["input_ids"]  # (P, k, T)
        P, k, T = ids.shape
        Lp = self.cache.manifest["prompt_tokens"]
        C = T + 1 - Lp
        token_bytes = torch.as_tensor(self.cache.token_bytes, device=device)
        out = {key: [micro[key]] for key in ("input_ids", "labels", "n_bytes", "source")}
        prompt = ids[:, 0, :Lp]  # (P, Lp)
        prompt_ids = prompt.tolist()
        texts = [self._student.decode(p) for p in prompt_ids]
        index = int(micro.get("distill_index", 0))
        for t, teacher in enumerate(self.online_teachers):
            teacher.sampling.max_new_tokens = C
            checked = generate_checked(
                lambda rows, seed, teacher=teacher: teacher.generate_ids(
                    [prompt_ids[r] for r in rows], seed),
                texts, lambda g: (g.token_ids[:C], self._student.decode(g.token_ids[:C])),
                lambda attempt, t=t: self.seed * 7919 + index * 31 + t + attempt * 1_000_003,
                self.index, self.max_tries, teacher.name)
            rep = self.online_report.setdefault(teacher.name, {
                "candidates": 0, "regenerations": 0, "dropped_benchmark": 0})
            rep["candidates"] += P
            rep["regenerations"] += checked.regenerations
            rep["dropped_benchmark"] += len(checked.dropped)
            cand = torch.full((P, C), teacher.eot_id or 0, dtype=torch.long, device=device)
            lab = torch.full((P, T), -100, dtype=torch.long, device=device)
            n_bytes = torch.zeros(P, dtype=torch.long, device=device)
            for p, kept in enumerate(checked.kept):
                if kept is None:  # every try copied benchmark text: the candidate is absent
                    continue
                toks = torch.tensor(kept[1], dtype=torch.long, device=device)
                cand[p, : len(toks)] = toks
                lab[p, Lp - 1: Lp - 1 + len(toks)] = toks
                n_bytes[p] = token_bytes[toks].sum() if len(toks) else 0
            full = torch.cat([prompt, cand], dim=1)[:, :-1]  # (P, T)
            out["input_ids"].append(full[:, None])
            out["labels"].append(lab[:, None])
            out["n_bytes"].append(n_bytes[:, None])
            src = torch.full((P, 1), len(self.cache.sources) + t, dtype=torch.long, device=device)
            out["source"].append(torch.where(n_bytes[:, None] > 0, src, -1))
        merged = {**micro, **{key: torch.cat(v, dim=1) for key, v in out.items()}}
        merged.pop("soft_ids", None)  # soft targets cover cached candidates only
        merged.pop("soft_logprobs", None)
        return merged

    # ------------------------------------------------------------------ bookkeeping
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if isinstance(batch, dict) and batch.get("kind") == KIND:
            index = int(batch.get("distill_index", self.distill_steps))
            self.distill_steps = index + 1
            self.cursor = int(batch.get("distill_next", self.cursor))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.summary_file or not self.names:
            return
        local = self._running_totals(pl_module.device).clone()
        total = trainer.strategy.reduce(local, reduce_op="sum")
        folder = Path(trainer.log_dir or trainer.default_root_dir)  # a broadcast: every rank
        if not trainer.is_global_zero:
            return
        samples = max(1.0, float(total[-1, 1]))
        column = 2 if self.objective_config.selection == "ce" else 3
        summary = {"every_n_batches": self.every_n, "distill_steps": self.distill_steps,
                   "samples": int(total[-1, 1]), "cache": self.cache_path, "sources": {
                       n: {"mean_candidate_loss": float(total[i, 0] / max(1.0, total[i, 1])),
                           "candidates": int(total[i, 1]), "wins": int(total[i, column]),
                           "win_rate": float(total[i, column] / samples),
                           # the win rate under each scoring (the selection uses one of them)
                           "win_rate_ce": float(total[i, 2] / samples),
                           "win_rate_kl": float(total[i, 3] / samples)}
                       for i, n in enumerate(self.names)},
                   "selection": self.objective_config.selection,
                   "online_decontam": self.online_report}
        atomic.write_text(folder / self.summary_file, json.dumps(summary, indent=1) + "\n")

    def state_dict(self) -> dict[str, Any]:
        return {"every_n_batches": self.every_n, "distill_steps": self.distill_steps,
                "cursor": self.cursor, "prompts": self.prompts,
                "accumulation": self.accumulation, "seed": self.seed,
                "cache_fingerprint": self.cache.fingerprint if self.cache else None,
                "totals": self.totals}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = dict(state_dict)
        self.distill_steps = int(state_dict.get("distill_steps", 0))
        self.cursor = int(state_dict.get("cursor", 0))
        self._saved_totals = {k: list(v) for k, v in state_dict.get("totals", {}).items()}
        self._totals = None
        if self.cache is not None:
            self._check_resume(self._loaded)

    def _check_resume(self, saved: dict[str, Any]) -> None:
        changed = [key for key, now in (("every_n_batches", self.every_n),
                                        ("prompts", self.prompts),
                                        ("accumulation", self.accumulation), ("seed", self.seed),
                                        ("cache_fingerprint", self.cache.fingerprint))
                   if saved.get(key) is not None and saved.get(key) != now]
        if changed:
            warnings.warn(f"TeacherDistillation resumed with changed {', '.join(changed)}: the "
                          "distillation batches after resume differ from an uninterrupted run",
                          stacklevel=2)

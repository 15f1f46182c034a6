"""TeacherDistillation: every 4th step distils, resume at a non-multiple of 4, per-source logs."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from callbacks.distillation import TeacherDistillation
from loki.atomic import NoRoomError
from loki.data.datamodule import LokiDataModule
from loki.distill.cache import CandidateCache
from loki.distill.steps import DistillSteps
from loki.distill.teachers import LokiTeacher
from loki.errors import LokiError
from loki.module import LokiLM
from tests.distill.conftest import (  # noqa: F401 (fixtures)
    BENCHMARK,
    cache,
    loki_ckpt,
    shards,
    student,
)
from tests.helpers.full_disk import file_size_limit


class Record(L.Callback):
    def __init__(self) -> None:
        self.steps: list[tuple[int, str, int | None, list]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps.append((trainer.global_step, batch["kind"], batch.get("distill_index"),
                           batch["index"].flatten().tolist()))


def _fit(tmp_path: Path, shards_dir: str, spec: str, cache_dir: str, steps: int,  # noqa: F811
         ckpt: str | None = None, dm_kw: dict | None = None, max_epochs: int | None = None,
         **cb) -> tuple[Record, TeacherDistillation, L.Trainer]:
    dm = LokiDataModule(sources={"web": [shards_dir]}, block_size=16, micro_batch_size=4,
                        val_fraction=0.0, tokenizer=spec, seed=7, **(dm_kw or {}))
    torch.manual_seed(0)
    module = LokiLM({"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32},
                    vocab_size=dm.vocab_size)
    record, distill = Record(), TeacherDistillation(cache_dir, **cb)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path, max_epochs=max_epochs,
                        limit_val_batches=0, callbacks=[distill, record])
    trainer.fit(module, dm, ckpt_path=ckpt)
    return record, distill, trainer


def test_every_fourth_step_survives_resume_at_a_non_multiple(tmp_path, student, shards, cache):  # noqa: F811
    _, spec = student
    full, _, _ = _fit(tmp_path / "a", shards, spec, cache, 12)
    kinds = [k for _, k, _, _ in full.steps]
    assert kinds == ["lm", "lm", "lm", "distill"] * 3
    assert [i for _, k, i, _ in full.steps if k == "distill"] == [0, 1, 2]
    first, distill, trainer = _fit(tmp_path / "b", shards, spec, cache, 6)
    ckpt = tmp_path / "step6.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)["callbacks"]
    saved = next(v for k, v in state.items() if "TeacherDistillation" in k)
    assert saved["distill_steps"] == 1
    assert saved["cursor"] == trainer.datamodule.state["interleave_pos"]["distill"] > 0
    rest, _, _ = _fit(tmp_path / "b", shards, spec, cache, 12, ckpt=str(ckpt))
    assert first.steps + rest.steps == full.steps  # same kinds, prompts and LM samples


def test_objective_logs_per_source_and_writes_summary(tmp_path, student, shards, cache):  # noqa: F811
    _, spec = student
    record, distill, trainer = _fit(tmp_path, shards, spec, cache, 8, normalize="token")
    metrics = trainer.callback_metrics
    for name in ("ground_truth", "lk"):
        assert f"distill/win_rate/{name}" in metrics and f"distill/loss/{name}" in metrics
    assert "distill/gap" in metrics and "train/distill_loss" in metrics
    summary = json.loads((tmp_path / "distill_summary.json").read_text())
    rates = [s["win_rate"] for s in summary["sources"].values()]
    assert summary["distill_steps"] == 2 and sum(rates) == pytest.approx(1.0)
    # written atomically: a full disk leaves the earlier summary whole
    before = (tmp_path / "distill_summary.json").read_bytes()
    with file_size_limit(64), pytest.raises(NoRoomError, match="distill_summary.json"):
        distill.on_fit_end(trainer, trainer.lightning_module)
    assert (tmp_path / "distill_summary.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # B x T = 4 x 16 LM tokens per micro-batch ~ P x k x T_c = P x 2 x 21 -> P = 2 prompts
    assert distill.prompts == 2
    batch = distill.steps(0)
    assert batch["input_ids"].shape == (1, 2, 2, 21) and batch["kind"] == "distill"
    # the demo report's table: win rate by source under both scorings, from that summary
    from loki.report_training import distill_section

    rows = [{"distill/win_rate/ground_truth": 0.5, "distill/win_rate/lk": 0.5}]
    table = distill_section(rows, str(tmp_path / "metrics.csv"))["summary"]
    assert table["columns"][1].startswith("win rate, CE per byte (selected)")
    assert [r[0] for r in table["rows"]] == ["ground_truth", "lk"]
    assert sum(r[1] for r in table["rows"]) == pytest.approx(1.0)
    assert sum(r[2] for r in table["rows"]) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def bench_index(tmp_path_factory) -> str:
    from loki.filtering.decontam import BenchmarkIndex

    index = BenchmarkIndex(n=6)  # short: the 12-token test prompts hold few words
    index.add_text(BENCHMARK, "toy")
    path = tmp_path_factory.mktemp("index") / "bench.npz"
    index.save(str(path))
    return str(path)


class CopyingTeacher(LokiTeacher):
    """An online teacher whose first ``copies`` tries per prompt end a benchmark sentence that
    the prompt began (so only prompt + continuation shows the copy)."""

    def __init__(self, ckpt: str, name: str, copies: int, tok) -> None:
        super().__init__(ckpt, name=name)
        self.copies, self.tok, self.tries = copies, tok, 0

    def generate_ids(self, prompt_ids, seed):
        from loki.distill.teachers import Generation

        self.tries += 1
        text = " seven wizards and so the story goes on."
        if self.tries > self.copies:
            text = " and so the story goes on."
        return [Generation(token_ids=self.tok.encode(text)) for _ in prompt_ids]


def test_online_loki_teacher_adds_a_candidate(tmp_path, student, shards, cache, loki_ckpt,  # noqa: F811
                                              bench_index):
    from loki.distill.teachers import LokiTeacher, Sampling

    _, spec = student
    online = LokiTeacher(loki_ckpt, name="online", sampling=Sampling(temperature=1.0))
    with pytest.raises(LokiError, match="online teachers need a benchmark index"):
        _fit(tmp_path, shards, spec, cache, 4, online_teachers=[online])
    record, distill, trainer = _fit(tmp_path, shards, spec, cache, 4, online_teachers=[online],
                                    decontam_index=bench_index)
    assert distill.names == ["ground_truth", "lk", "online"]
    assert "distill/win_rate/online" in trainer.callback_metrics
    assert distill.totals["online"][1] > 0  # its candidates were scored


def test_online_teacher_copies_are_regenerated_or_dropped(student, shards, cache, loki_ckpt,  # noqa: F811
                                                          bench_index):
    tok, spec = student
    # the prompt ends with the benchmark sentence's first words; each half alone is clean
    prompt = tok.encode(" the quick brown fox jumps over the lazy dog while")
    from loki.distill.leaks import check_text, load_index

    index = load_index(bench_index)
    Lp = CandidateCache.open(cache).manifest["prompt_tokens"]
    head, rest = tok.decode(prompt[-Lp:]), " seven wizards and so the"
    assert check_text(index, head, rest)
    assert not index.contaminated(rest) and not index.contaminated(head)
    once = CopyingTeacher(loki_ckpt, "once", copies=1, tok=tok)
    always = CopyingTeacher(loki_ckpt, "always", copies=99, tok=tok)
    distill = TeacherDistillation(cache, online_teachers=[once, always],
                                  decontam_index=bench_index, max_tries=3)
    distill.cache = CandidateCache.open(cache)
    distill._setup_leak_check()
    for teacher in (once, always):
        teacher.eot_id = tok.eot_id
    micro = DistillSteps(cache, prompts=2)(0)
    micro = {k: (v[0] if torch.is_tensor(v) else v) for k, v in micro.items()}
    micro["input_ids"][:, :, :Lp] = torch.tensor(prompt[-Lp:])  # prompts that begin the copy
    merged = distill._add_online_candidates(micro, torch.device("cpu"))
    assert distill.online_report["once"] == {"candidates": 2, "regenerations": 2,
                                             "dropped_benchmark": 0}
    assert distill.online_report["always"]["dropped_benchmark"] == 2
    assert (merged["source"][:, -1] == -1).all()  # the copies never reach the loss
    for p in range(2):
        labels = merged["labels"][p, -2]
        text = tok.decode(prompt[-Lp:]) + tok.decode(labels[labels != -100].tolist())
        assert not index.contaminated(text)


def test_cache_from_another_tokenizer_is_refused(tmp_path, student, shards, cache):  # noqa: F811
    _, spec = student
    manifest = Path(cache) / "manifest.json"
    other = tmp_path / "other"
    other.mkdir()
    data = json.loads(manifest.read_text())
    data["student"]["vocab_hash"] = "ffffffffffffffff"
    (other / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(LokiError, match="vocab_hash ffffffffffffffff"):
        _fit(tmp_path, shards, spec, str(other), 2)


def test_bad_arguments():
    with pytest.raises(LokiError):
        TeacherDistillation("x", every_n_batches=1)


# ---------------------------------------------------------------------- one token clock
def test_one_token_clock_reaches_max_tokens_at_the_arithmetic_step(tmp_path, student, shards,  # noqa: F811
                                                                   cache):  # noqa: F811
    _, spec = student
    c = CandidateCache.open(cache)
    assert (c.gather("cont_len", np.arange(c.num_prompts))[:, 0] == 10).all()  # full ground truth
    # LM step: B x T = 4 x 16 = 64 tokens. Distillation step: P = 2 prompts per micro-batch,
    # A_d = round(64 / (2 x 10)) = 3 micro-batches, 6 prompts x 10 ground-truth tokens = 60.
    # Steps 1-3 LM, 4 distill, ...: 252 tokens per 4 steps; 700 is passed at step 12 (756).
    record, distill, trainer = _fit(tmp_path, shards, spec, cache, -1,
                                    dm_kw={"max_tokens": 700}, max_epochs=1,
                                    prompts_per_micro_batch=2)
    dm, module = trainer.datamodule, trainer.lightning_module
    assert trainer.global_step == 12
    assert module.tokens_seen == dm.tokens_seen == 756  # the LR's clock is the data's clock
    distills = [s for s in record.steps if s[1] == "distill"]
    assert len(distills) == 3 and all(len(s[3]) == 6 for s in distills)
    assert module.lr_schedule.factor(module.tokens_seen) == module.lr_schedule.factor(756)

"""TeacherDistillation: every 4th step distils, resume at a non-multiple of 4, per-source logs."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks.distillation import DistillSteps, TeacherDistillation
from loki.data.datamodule import LokiDataModule
from loki.distill.build import BuildConfig, build_shard, finalize_cache
from loki.errors import LokiError
from loki.module import LokiLM
from tests.distill.conftest import loki_ckpt, shards, student  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def cache(student, shards, loki_ckpt, tmp_path_factory) -> str:  # noqa: F811
    _, spec = student
    out = tmp_path_factory.mktemp("cache") / "cache"
    cfg = BuildConfig(output=str(out), tokenizer=spec,
                      prompts={"shards": [shards], "num_prompts": 24, "prompt_tokens": 12,
                               "max_new_tokens": 10},
                      teachers=[{"kind": "loki", "checkpoint": loki_ckpt, "name": "lk",
                                 "sampling": {"max_new_tokens": 10}}])
    build_shard(cfg)
    finalize_cache(cfg)
    return str(out)


class Record(L.Callback):
    def __init__(self) -> None:
        self.steps: list[tuple[int, str, int | None, list]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps.append((trainer.global_step, batch["kind"], batch.get("distill_index"),
                           batch["index"].flatten().tolist()))


def _fit(tmp_path: Path, shards_dir: str, spec: str, cache_dir: str, steps: int,  # noqa: F811
         ckpt: str | None = None, **cb) -> tuple[Record, TeacherDistillation, L.Trainer]:
    dm = LokiDataModule(sources={"web": [shards_dir]}, block_size=16, micro_batch_size=4,
                        val_fraction=0.0, tokenizer=spec, seed=7)
    torch.manual_seed(0)
    module = LokiLM({"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32},
                    vocab_size=dm.vocab_size)
    record, distill = Record(), TeacherDistillation(cache_dir, **cb)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path,
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
    # B x T = 4 x 16 LM tokens per micro-batch ~ P x k x T_c = P x 2 x 21 -> P = 2 prompts
    assert distill.prompts == 2
    batch = distill.steps(0)
    assert batch["input_ids"].shape == (1, 2, 2, 21) and batch["kind"] == "distill"


def test_online_loki_teacher_adds_a_candidate(tmp_path, student, shards, cache, loki_ckpt):  # noqa: F811
    from loki.distill.teachers import LokiTeacher, Sampling

    _, spec = student
    online = LokiTeacher(loki_ckpt, name="online", sampling=Sampling(temperature=1.0))
    record, distill, trainer = _fit(tmp_path, shards, spec, cache, 4, online_teachers=[online])
    assert distill.names == ["ground_truth", "lk", "online"]
    assert "distill/win_rate/online" in trainer.callback_metrics
    assert distill.totals["online"][1] > 0  # its candidates were scored


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


def test_steps_are_disjoint_across_ranks_and_deterministic(cache):
    a = [DistillSteps(cache, prompts=3, accumulation=2, rank=r, world_size=2) for r in (0, 1)]
    idx = [s(i)["index"].flatten().tolist() for i in range(2) for s in a]
    assert len(set(sum(idx, []))) == 24  # 2 steps x 2 ranks x 6 prompts: one epoch, no repeats
    assert a[0](1)["index"].tolist() == DistillSteps(cache, 3, 2, 0, 2)(1)["index"].tolist()
    import pickle  # DataLoader workers receive the builder pickled, without the opened cache

    clone = pickle.loads(pickle.dumps(a[1]))
    assert clone._cache is None and torch.equal(clone(1)["input_ids"], a[1](1)["input_ids"])


def test_bad_arguments():
    with pytest.raises(LokiError):
        TeacherDistillation("x", every_n_batches=1)

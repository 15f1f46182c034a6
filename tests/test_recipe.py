"""The 1.4B preset holds the whole recipe of the paper notes: a test per recipe element, so an
edit that drops one fails here. Read as plain YAML (the parsers check the types elsewhere:
tests/test_experiments.py), across the files a cluster run chains together."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from loki.config import LokiConfig
from loki.data.schedules import parse_points, parse_tokens

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "experiments"
RECIPE_FILES = ["loki-1.4b.yaml", "data/web-1.4b.yaml", "tokenizer/cl100k-32k.yaml",
                "distill/loki-1.4b.yaml", "eval/paper.yaml"]
SIX = {"arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k"}


def _load(name: str) -> dict:
    return yaml.safe_load((EXP / name).read_text())


@pytest.fixture(scope="module")
def fit() -> dict:
    return _load("loki-1.4b.yaml")


def _callback(fit: dict, name: str) -> dict:
    found = [c for c in fit["trainer"]["callbacks"] if c["class_path"].endswith(f".{name}")]
    assert len(found) == 1, f"the recipe has no (or several) {name}"
    return found[0].get("init_args", {})


def test_model_shape_and_alibi(fit):
    config = LokiConfig.from_name(fit["model"]["config"])
    assert (config.n_layer, config.n_head, config.n_embd, config.vocab_size) == (24, 32, 2048,
                                                                                32000)
    assert 1.38e9 < config.num_params() < 1.42e9
    assert fit["data"]["block_size"] == 2048
    from loki.model import Loki

    with torch.device("meta"):
        model = Loki(config)
    names = [n for n, _ in model.named_parameters()]
    assert not [n for n in names if "wpe" in n or "pos" in n]  # ALiBi: no position embeddings
    assert all(b.attn.slopes.numel() == 32 for b in model.blocks)  # one ALiBi slope per head


def test_the_32k_tokenizer(fit):
    tok = _load("tokenizer/cl100k-32k.yaml")
    assert (tok["base"], tok["vocab_size"]) == ("cl100k_base", 32000)
    assert fit["data"]["tokenizer"] == tok["output"]  # the run trains on the pruned tokenizer
    assert _load("distill/loki-1.4b.yaml")["tokenizer"] == tok["output"]


def test_filter_stages_and_six_task_decontamination():
    data = _load("data/web-1.4b.yaml")
    for stage in ("clean", "semdedup", "prototypes", "quality", "factual", "decontam"):
        assert data[stage]["enabled"], stage
    assert data["dedup"]["exact"] and data["dedup"]["minhash"]
    decontam = data["decontam"]
    assert set(decontam["lm_eval_tasks"]) == SIX  # mmlu: the group, every subject
    assert decontam["n"] == 13
    # the same benchmark files serve decontamination and the final eval
    suite = _callback(_load("loki-1.4b.yaml"), "OneShotBenchmarkEval")["suite"]
    assert decontam["offline"] and decontam["data_dir"] == suite["data_dir"]
    # the chain: filter output -> tokenizer corpus; filter index -> teacher candidates check
    assert data["output_dir"] in _load("tokenizer/cl100k-32k.yaml")["corpus"]
    distill = _load("distill/loki-1.4b.yaml")
    assert distill["decontam"]["index"] == f"{data['work_dir']}/decontam/index.npz"


def test_synthetic_share_early_batch_warmup_and_two_epochs(fit):
    data = fit["data"]
    share = parse_points(data["mixture"]["synthetic"], "synthetic")
    assert share[0] == (0, pytest.approx(0.11)) and share[-1][1] == 0.0  # early on, then none
    assert share[-1][0] == parse_tokens("50B")
    warmup = data["batch_size"]
    assert parse_tokens(warmup["over_tokens"]) == 50 * 10**9 and warmup["start"] < warmup["target"]
    assert warmup["target"] * data["block_size"] == 2 * 1024 * 1024  # 2M tokens per step
    assert parse_tokens(data["max_tokens"]) == 2 * 250 * 10**9  # 2 epochs of 250B tokens
    assert set(data["sources"]) == {"web", "synthetic"}


def test_fsdp2_and_8bit_optimizer_state(fit):
    strategy = fit["trainer"]["strategy"]
    assert strategy["class_path"].endswith("ModelParallelStrategy")  # FSDP2
    args = strategy["init_args"]
    assert args["data_parallel_size"] == fit["trainer"]["devices"] * fit["trainer"]["num_nodes"]
    assert args["tensor_parallel_size"] == 1 and args["save_distributed_checkpoint"]
    assert fit["model"]["optimizer"]["class_path"] == "loki.precision.AdamW8bit"
    assert fit["model"]["sharding"]["param_dtype"] == "bfloat16"


def test_distillation_every_fourth_batch_with_the_min_loss_objective(fit):
    kd = _callback(fit, "TeacherDistillation")
    assert kd["every_n_batches"] == 4
    assert kd["softmin_temperature"] == 0.0  # the hard minimum over the candidates
    assert kd.get("accumulation") is None  # distillation steps follow the batch warmup
    assert kd.get("selection", "ce") == "ce"  # every candidate scored by its CE per byte
    distill = _load("distill/loki-1.4b.yaml")
    assert kd["cache"] == distill["output"]  # trains on what `loki distill build` writes
    assert [t["name"] for t in distill["teachers"]] == ["gpt-4", "mistral-7b", "llama-2-13b"]


def test_rollback_with_reseed(fit):
    rollback = _callback(fit, "LossSpikeRollback")
    assert rollback["max_rollbacks"] >= 1 and rollback["snapshot_every_n_steps"]
    assert rollback["skip_spike_samples"]
    from callbacks.spike_rollback import derive_seed

    assert derive_seed(1234, 1) != derive_seed(1234, 2)  # each rollback a different seed


def test_one_shot_eval_of_the_six_tasks(fit):
    from loki.eval.presets import preset_rows

    ev = _callback(fit, "OneShotBenchmarkEval")
    assert ev["checkpoint"] == "final" and not ev["force"]
    rows = preset_rows(ev["suite"]["preset"], ev["suite"]["offline"])
    assert {r.task.removesuffix("_local") for r in rows} == SIX
    assert [r.num_fewshot for r in rows] == [10, 5, 5, 5, 8, 10]  # the paper's shots


@pytest.mark.parametrize("name", RECIPE_FILES)
def test_paths_are_relative_to_the_project(name):
    def strings(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)
        elif isinstance(node, str):
            yield node

    absolute = [s for s in strings(_load(name)) if s.startswith(("/", "s3://", "gs://", "~"))]
    assert absolute == []

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from tests.eval.checkpoints import save_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.fixture(scope="session")
def tokenizer():
    from loki.tokenizer import LokiTokenizer

    return LokiTokenizer.from_spec("cl100k_base")


@pytest.fixture(scope="session")
def lm(tiny_ckpt):
    from loki.eval.adapter import LokiEvalLM

    return LokiEvalLM(checkpoint=str(tiny_ckpt), batch_size=3, device="cpu")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """A few cloze, last-word and minimal-pair items in the demo task layout."""
    root = tmp_path_factory.mktemp("tasks")
    cloze = [{"id": f"c{i}", "query": f"The river runs past mill number {i}.",
              "choices": [" It turns the wheel.", " Bread is baked.", " The moon is cold."],
              "gold": i % 3} for i in range(6)]
    last = [{"id": f"w{i}", "query": f"The cat sat on the mat number {i} and ate the",
             "answer": "fish"} for i in range(4)]
    pairs = [{"id": f"p{i}", "query": "", "choices": ["The cat sat on the mat.",
                                                      "The sat cat on the mat."][::1 - 2 * (i % 2)],
              "gold": i % 2} for i in range(4)]
    for name, rows in (("loki_demo_cloze", cloze), ("loki_demo_lastword", last),
                       ("loki_demo_pairs", pairs)):
        write_jsonl(root / name / "test.jsonl", rows)
        write_jsonl(root / name / "train.jsonl", rows[:2])
    return root


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matmuls: with several torch threads on a busy 2-core machine, each op waits on
    thread barriers (3.6 ms vs 0.015 ms for a 64x192 linear measured under load 9)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _no_env_probe(monkeypatch):
    """lm-eval's add_env_info runs torch's collect_env (a dozen subprocesses, ~3 s per call)."""
    if importlib.util.find_spec("lm_eval") is not None:
        monkeypatch.setattr("lm_eval.evaluator.add_env_info", lambda results: None)

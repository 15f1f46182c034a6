import gzip
import json

import pytest

from loki.distill.synthetic import topics_from_documents, write_synthetic
from loki.distill.teachers import Generation
from tests.distill.conftest import student  # noqa: F401 (fixture)


class EchoTeacher:
    name = "echo"
    shares_student_vocab = False

    def __init__(self, texts):
        self.texts = texts

    def identity(self):
        return {"kind": "fake"}

    def generate(self, prompts, prompt_ids, seed):
        return [Generation(text=t) for t in self.texts[: len(prompts)]]


class OneBadIndex:
    def contaminated(self, text):
        return "benchmark" in text


def test_topics_are_titles_deduplicated(tmp_path):
    path = tmp_path / "raw.jsonl"
    docs = ["Anarchism\n\nbody", "Autism\n\nbody", "Anarchism\n\nagain", "x\n\ntoo short"]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    assert topics_from_documents([path], limit=10) == ["Anarchism", "Autism"]
    assert topics_from_documents([path], limit=1) == ["Anarchism"]


def test_synthetic_documents_are_tagged_and_checked(tmp_path):
    long = "Plain words about the topic. " * 10
    teacher = EchoTeacher([long, "short", long + " benchmark copy"])
    report = write_synthetic(teacher, ["A", "B", "C"], tmp_path, index=OneBadIndex(),
                             max_tries=1)
    assert (report["written"], report["too_short"], report["benchmark_copy"]) == (1, 1, 1)
    with gzip.open(tmp_path / "00000.jsonl.gz", "rt") as f:
        docs = [json.loads(line) for line in f]
    assert len(docs) == 1 and docs[0]["metadata"]["source"] == "synthetic"
    assert docs[0]["text"].startswith("A\n\n")
    assert json.loads((tmp_path / "synthetic_report.json").read_text())["written"] == 1


def test_production_synthetic_path_is_decontaminated_resumable_and_tokenized(
        tmp_path, student, monkeypatch):  # noqa: F811
    from loki.distill.synthetic import SyntheticConfig, run_synthetic
    from loki.errors import LokiError
    from loki.filtering.decontam import BenchmarkIndex
    from tests.distill.conftest import BENCHMARK
    from tests.distill.llm_server import FaultyLLM

    _, spec = student
    raw = tmp_path / "raw.jsonl"
    titles = ["Boxing", "Wizards", "Gardens", "Rivers", "Bridges", "Clocks"]
    raw.write_text("".join(json.dumps({"text": f"{t}\n\nbody"}) + "\n" for t in titles))
    index = BenchmarkIndex(n=6)
    index.add_text(BENCHMARK, "toy")
    index.save(str(tmp_path / "index.npz"))
    clean = "Plain words about the topic, said simply. " * 6

    def answer(prompt: str, n: int) -> str:
        if "Boxing" in prompt or ("Wizards" in prompt and n == 0):
            return " " + BENCHMARK  # Boxing always copies; Wizards only on its first try
        return clean

    llm = FaultyLLM("k", fault_rate=0.0, hang_s=0.3, answer=answer)
    monkeypatch.setenv("SYN_KEY", "k")
    teacher = {"kind": "openai", "model": "m", "name": "api", "endpoint": "completions",
               "base_url": llm.base_url, "api_key_env": "SYN_KEY", "timeout_s": 0.2,
               "backoff_s": 0.01, "max_backoff_s": 0.02, "max_retries": 10}
    cfg = dict(output=str(tmp_path / "syn"), topics=[str(raw)], num_topics=10, teacher=teacher,
               tokenizer=spec, min_chars=100, executor={"tasks": 2, "workers": 1})
    with pytest.raises(LokiError, match="decontam.index"):
        SyntheticConfig(**cfg)
    cfg["decontam"] = {"index": str(tmp_path / "index.npz"), "max_tries": 3}
    try:
        report = run_synthetic(SyntheticConfig(**cfg))
        requests = llm.requests
        assert run_synthetic(SyntheticConfig(**cfg)) == report  # resumed: nothing redone
        assert llm.requests == requests
    finally:
        llm.close()
    assert (report["written"], report["benchmark_copy"]) == (5, 1)
    assert report["regenerations"] == 3  # Boxing twice, Wizards once
    from loki.distill.cli import describe_synthetic

    syn = tmp_path / "syn"
    assert describe_synthetic(str(syn), report) == (
        f"synthetic source: {syn}/shards/synthetic (5 passages from 6 topics; 0 too short, 1 "
        f"benchmark copies dropped after 3 regenerations; counts in {syn}/synthetic_report.json)")
    docs = []
    for path in sorted((tmp_path / "syn" / "jsonl").glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            docs += [json.loads(line) for line in f]
    assert sorted(d["text"].split("\n")[0] for d in docs) == sorted(titles[1:])
    assert not any(index.contaminated(d["metadata"]["prompt"] + d["text"]) for d in docs)
    manifest = json.loads((tmp_path / "syn" / "shards" / "synthetic" / "manifest.json")
                          .read_text())
    assert manifest["num_tokens"] > 0

import gzip
import json

from loki.distill.synthetic import topics_from_documents, write_synthetic
from loki.distill.teachers import Generation


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
    report = write_synthetic(teacher, ["A", "B", "C"], tmp_path, index=OneBadIndex())
    assert (report["written"], report["too_short"], report["benchmark_copy"]) == (1, 1, 1)
    with gzip.open(tmp_path / "00000.jsonl.gz", "rt") as f:
        docs = [json.loads(line) for line in f]
    assert len(docs) == 1 and docs[0]["metadata"]["source"] == "synthetic"
    assert docs[0]["text"].startswith("A\n\n")
    assert json.loads((tmp_path / "synthetic_report.json").read_text())["written"] == 1

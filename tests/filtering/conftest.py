"""Fixtures for the filter tests: a deterministic prose generator and small JSONL corpora."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

_STOP = ["the", "of", "and", "to", "that", "with", "in", "a", "is", "was", "for", "on"]


def _vocabulary() -> list[str]:
    # real English words from the packaged seed set's prose rows
    from loki.filtering.quality import seed_path

    words: set[str] = set()
    with open(seed_path(), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["label"] == 1:
                words.update(w for w in re.findall(r"[a-z]+", row["text"].lower()) if 3 <= len(w) <= 9)
    return sorted(words)


VOCAB = _vocabulary()


def prose(rng: random.Random, sentences: int = 12) -> str:
    """Random English-word sentences with stop words: passes the Gopher filters, no repeats."""
    out = []
    for _ in range(sentences):
        words = [rng.choice(VOCAB) if i % 3 else rng.choice(_STOP) for i in range(rng.randint(9, 16))]
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def read_output(folder: Path) -> list[dict]:
    import gzip

    rows = []
    for p in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(p, "rt", encoding="utf-8") as f:
            rows += [json.loads(line) for line in f]
    return rows


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2, loaded once per session (~8 s)."""
    from loki.filtering.embed import load_embedder

    return load_embedder("minilm")


def filter_config(tmp_path: Path, inputs: list[str], **stages):
    """A FilterConfig for tests: one task, in-process, hashing embedder, every stage off unless
    named in ``stages`` (stage name -> dict of its fields, or True)."""
    from loki.filtering import config as c
    from loki.filtering import stage_config as sc

    enabled = {k: (v if isinstance(v, dict) else {}) for k, v in stages.items()}

    def part(cls, name, **defaults):
        on = name in enabled
        return cls(**({"enabled": on} if "enabled" in cls.__dataclass_fields__ else {}),
                   **defaults | enabled.get(name, {}))

    return c.FilterConfig(
        input=c.InputConfig(paths=inputs, **enabled.get("input", {})),
        output_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"),
        executor=c.ExecutorConfig(tasks=1, workers=1),
        clean=part(sc.CleanConfig, "clean"),
        dedup=sc.DedupConfig(**({"exact": False, "minhash": False} | enabled.get("dedup", {}))),
        embed=sc.EmbedConfig(**({"model": "hashing"} | enabled.get("embed", {}))),
        semdedup=part(sc.SemDedupConfig, "semdedup"),
        prototypes=part(sc.PrototypeConfig, "prototypes"),
        quality=part(sc.QualityConfig, "quality", model_path=str(tmp_path / "quality.json")),
        factual=part(sc.FactualConfig, "factual"),
        decontam=part(sc.DecontamConfig, "decontam"),
    )


def run_filter(cfg):
    from loki.filtering.pipeline import FilterPipeline

    report = FilterPipeline(cfg).run()
    return report, read_output(Path(cfg.output_dir))


def stage_row(report: dict, name: str) -> dict:
    return next(r for r in report["stages"] if r["stage"] == name)


def cli_error(cfg, capfd, *argv: str) -> str:
    """``loki filter`` on ``cfg`` (a YAML written from it into the current folder): the one error
    line it prints."""
    import dataclasses

    import yaml

    from loki.cli import main

    path = "filter-run.yaml"
    with open(path, "w") as f:
        yaml.safe_dump(dataclasses.asdict(cfg), f)
    capfd.readouterr()  # what ran before
    with pytest.raises(SystemExit) as exc:
        main(["filter", *argv, "--config", path])
    assert exc.value.code == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err

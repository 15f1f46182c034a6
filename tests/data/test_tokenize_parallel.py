"""``loki tokenize`` as datatrove tasks: task count, determinism, swap-in, errors, empty texts."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from loki.cli import main as loki
from loki.data.shards import TokenShardSet
from loki.data.tokenize import plan_tasks, tokenize_files
from loki.errors import LokiError
from loki.tokenizer import LokiTokenizer

WORDS = "river stone light paper garden window music winter orange silver market engine".split()


def corpus(folder: Path, files: int = 5, docs: int = 40) -> list[Path]:
    """Filter-style shards of sentences from two sources; a few empty texts."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in range(files):
        path = folder / f"{f:05d}.jsonl.gz"
        with gzip.open(path, "wt") as out:
            for d in range(docs):
                text = " ".join(rng.choice(WORDS, size=rng.integers(5, 60))) + "."
                if d % 17 == 3:
                    text = ""
                source = "synthetic" if d % 5 == 0 else "web"
                out.write(json.dumps({"id": f"{f}-{d}", "text": text,
                                      "metadata": {"source": source}}) + "\n")
        paths.append(path)
    return paths


def documents(folder: Path) -> dict[str, list[list[int]]]:
    """Every document's ids per source, read through the shard set the data module reads."""
    out = {}
    for manifest in sorted(folder.glob("*/manifest.json")):
        s = TokenShardSet.open(str(manifest.parent))
        docs = []
        for i in range(len(s.shard_tokens)):
            ids = s.reader(i).read(0, s.shard_tokens[i])
            bounds = s.reader(i).documents(s, i)
            docs += [ids[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])]
        out[s.source] = docs
    return out


def files_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_two_tasks_give_the_documents_of_one_task_and_are_deterministic(tmp_path):
    files = corpus(tmp_path / "in")
    one = tokenize_files(files, tmp_path / "one", shard_tokens=900, log=lambda m: None)
    two = tokenize_files(files, tmp_path / "two", shard_tokens=900, tasks=2, workers=2,
                         log=lambda m: None)
    tokenize_files(files, tmp_path / "again", shard_tokens=900, tasks=2, log=lambda m: None)
    assert documents(tmp_path / "one") == documents(tmp_path / "two")  # same order, too
    for source in ("web", "synthetic"):
        assert one[source]["num_tokens"] == two[source]["num_tokens"]
        assert one[source]["num_documents"] == two[source]["num_documents"]
        TokenShardSet.open(str(tmp_path / "two" / source)).check("full")
    assert sum(m["empty_documents_skipped"] for m in two.values()) == 15  # never an EOT-only doc
    assert files_bytes(tmp_path / "two") == files_bytes(tmp_path / "again")
    assert len(two["web"]["shards"]) > 1 and not list((tmp_path / "two").glob(".tokenize-*"))
    eot = LokiTokenizer.from_spec("cl100k_base").eot_id
    assert all(doc[-1] == eot and len(doc) > 1 for docs in documents(tmp_path / "two").values()
               for doc in docs)


def test_data_module_reads_the_merged_set(tmp_path):
    from loki.data.datamodule import LokiDataModule

    files = corpus(tmp_path / "in", files=3)
    tokenize_files(files, tmp_path / "shards", tasks=3, log=lambda m: None)
    dm = LokiDataModule(sources={s: [str(tmp_path / "shards" / s)] for s in ("web", "synthetic")},
                        block_size=16, micro_batch_size=2, val_fraction=0.1)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader())) is not None


def test_tasks_split_files_contiguously_by_size(tmp_path):
    files = []
    for i, size in enumerate([10, 10, 80, 10, 10]):
        files.append(tmp_path / f"{i}.txt")
        files[-1].write_text("x" * size)
    parts = plan_tasks(files, 2)
    assert [f for p in parts for f in p] == files and all(parts)
    assert plan_tasks(files, 8)[0] and sum(map(len, plan_tasks(files, 8))) == 5


def test_failed_run_leaves_the_earlier_set_byte_identical(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = corpus(tmp_path / "in", files=2)
    out = tmp_path / "shards"
    tokenize_files(files, out, log=lambda m: None)
    before = files_bytes(out)
    capsys.readouterr()  # datatrove's lines of that run, outside a quiet console
    bad = tmp_path / "bad" / "00000.jsonl"
    bad.parent.mkdir()
    bad.write_text("".join(json.dumps({"text": f"doc {k}"}) + "\n" for k in range(301))
                   + json.dumps({"body": "no text"}) + "\n")
    with pytest.raises(SystemExit) as exit_:
        loki(["tokenize", "--inputs", json.dumps([str(files[0]), str(bad)]), "--output", str(out),
              "--tasks", "2"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()  # datatrove's lines are in runs/logs/tokenize.log
    assert err.count("\n") == 0 and err.startswith("loki tokenize: error: ")
    assert err.endswith("00000.jsonl:302: the record has no 'text' string")
    assert files_bytes(out) == before


@pytest.mark.parametrize("command", ["tokenize", "filter"])
def test_unwritable_output_is_a_one_line_error_before_any_work(tmp_path, capsys, command):
    files = corpus(tmp_path / "in", files=1)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "shards"
    if command == "tokenize":
        argv = ["tokenize", "--inputs", json.dumps([str(files[0])]), "--output", str(out)]
    else:
        argv = ["filter", "--input.paths", json.dumps([str(files[0])]), "--output_dir", str(out),
                "--work_dir", str(tmp_path / "work")]
    before = files_bytes(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        loki(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "a-file" in err and "not a folder" in err
    assert files_bytes(tmp_path) == before and not (tmp_path / "work").exists()


@pytest.mark.parametrize("bad_file, tasks", [
    ("zz.parquet", 1), ("zz.txt", 2), ("zz-tag.jsonl", 2), ("zz-array.jsonl", 1)])
def test_a_failed_run_removes_the_folders_it_created(tmp_path, bad_file, tasks):
    files = corpus(tmp_path / "in", files=2)
    bad = tmp_path / "in" / bad_file
    bad.write_bytes({"zz.parquet": b"PAR1 cut short", "zz.txt": b"caf\xe9",
                     "zz-tag.jsonl": b'{"text": "x", "metadata": {"source": "../up"}}\n',
                     "zz-array.jsonl": b'["x"]\n'}[bad_file])
    (tmp_path / "mine").mkdir()  # an empty folder the user made stays
    before = sorted(tmp_path.rglob("*"))
    for output in (tmp_path / "new" / "shards", tmp_path / "mine"):
        with pytest.raises(LokiError, match=bad_file):
            tokenize_files([*files, bad], output, tasks=tasks, workers=tasks, log=lambda m: None)
        assert sorted(tmp_path.rglob("*")) == before

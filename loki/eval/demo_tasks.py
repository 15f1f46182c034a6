"""Small offline benchmark tasks built from held-out demo text.

lm-eval's built-in tasks download from the hub; the demo evaluates on three local tasks instead,
made from documents of the demo corpus held out by a hash of their id (``held_out_fraction``):

- ``loki_demo_cloze`` (multiple choice): two sentences of a passage, then choose the true next
  sentence among distractor sentences from other held-out documents.
  Rows: ``{"id", "source_id", "query", "choices", "gold"}``.
- ``loki_demo_lastword`` (generation, LAMBADA-like): a sentence without its last word; generate
  that word. Rows: ``{"id", "source_id", "query", "answer"}``.
- ``loki_demo_pairs`` (minimal pairs, BLiMP-style): a held-out sentence against the same sentence
  with two neighbouring words swapped, or with one word replaced by a word from another held-out
  document; the model should give the original the higher log-likelihood. Chance is 50%, and
  word order and word choice are what a small model learns first, so this task separates a
  trained model from its initialization long before the cloze does.
  Rows: ``{"id", "source_id", "query": "", "choices": [a, b], "gold", "edit"}``.

Files: ``<out>/<task>/{train,test}.jsonl`` (train = few-shot pool) and ``<out>/manifest.json``.
The field names are the ones the decontamination index reads (``query``, ``choices``, ``gold``,
``answer``), so the filter removes these passages from training data: the demo model never trains
on its own test.

    python -m loki.eval.demo_tasks --raw data/demo/raw --out data/demo/tasks
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections.abc import Iterable
from pathlib import Path

from loki.errors import LokiError

CLOZE, LASTWORD, PAIRS = "loki_demo_cloze", "loki_demo_lastword", "loki_demo_pairs"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
_LAST_WORD = re.compile(r"^(?P<head>.*\S)\s+(?P<word>[A-Za-z][a-z]{2,})[.!?]$")
_PLAIN_WORD = re.compile(r"^[a-z]{2,}$")
# A pair sentence has at least as many words as the decontamination n-gram (13), so the filter's
# index covers every one of them and the training text never holds a test sentence.
PAIR_WORDS = (13, 40)


def held_out(doc_id: str, fraction: float) -> bool:
    """Deterministic split by CRC32 of the document id (same answer on every machine)."""
    return zlib.crc32(doc_id.encode()) % 10_000 < fraction * 10_000


def sentences(text: str) -> list[str]:
    """Whitespace-normalized sentences of 5 to 60 words."""
    flat = " ".join(text.split())
    return [s for s in _SENTENCE_END.split(flat) if 5 <= len(s.split()) <= 60]


def read_documents(paths: Iterable[str | Path]) -> list[dict]:
    docs = []
    for path in paths:
        path = Path(path)
        files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise LokiError(f"no demo documents at {path} (run fetch_demo_corpus first)")
        for f in files:
            with f.open() as fh:
                docs += [json.loads(line) for line in fh if line.strip()]
    return docs


def build_items(docs: list[dict], held_out_fraction: float = 0.05, n_choices: int = 4,
                seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(cloze items, last-word items) from the held-out documents, in a seeded order."""
    rng = random.Random(seed)
    held = [d for d in docs if held_out(str(d["id"]), held_out_fraction)]
    per_doc = {str(d["id"]): sentences(d["text"]) for d in held}
    pool = [(doc_id, s) for doc_id, ss in per_doc.items() for s in ss]
    cloze, last = [], []
    for doc_id, ss in per_doc.items():
        for k in range(2, len(ss), 3):  # every third sentence: passages do not overlap much
            others = [s for other, s in pool if other != doc_id]
            if len(others) < n_choices - 1:
                break
            choices = [ss[k], *rng.sample(others, n_choices - 1)]
            rng.shuffle(choices)
            cloze.append({"id": f"{CLOZE}-{len(cloze)}", "source_id": doc_id,
                          "query": f"{ss[k - 2]} {ss[k - 1]}",
                          "choices": [" " + c for c in choices], "gold": choices.index(ss[k])})
        for k in range(1, len(ss), 3):
            m = _LAST_WORD.match(ss[k])
            if m:
                last.append({"id": f"{LASTWORD}-{len(last)}", "source_id": doc_id,
                             "query": f"{ss[k - 1]} {m['head']}", "answer": m["word"]})
    rng.shuffle(cloze)
    rng.shuffle(last)
    return cloze, last


def build_pairs(docs: list[dict], held_out_fraction: float = 0.05, seed: int = 0) -> list[dict]:
    """Minimal-pair items from the held-out documents: one sentence in three, alternately
    corrupted by swapping two neighbouring lowercase words or by replacing one lowercase word
    with a word of another held-out document. The first word is never touched (its capital
    letter alone would give the answer away), nor punctuation. The gold sentence sits at a
    seeded random position, so a model that cannot tell the two apart scores 50%."""
    rng = random.Random(seed + 1)
    held = [d for d in docs if held_out(str(d["id"]), held_out_fraction)]
    per_doc = {str(d["id"]): [s for s in sentences(d["text"])
                              if PAIR_WORDS[0] <= len(s.split()) <= PAIR_WORDS[1]]
               for d in held}
    vocab = {doc_id: sorted({w for s in ss for w in s.split() if _PLAIN_WORD.match(w)})
             for doc_id, ss in per_doc.items()}
    items = []
    for doc_id, ss in per_doc.items():
        donors = [w for other, ws in vocab.items() if other != doc_id for w in ws]
        for k in range(0, len(ss), 3):
            words = ss[k].split()
            plain = [i for i in range(1, len(words)) if _PLAIN_WORD.match(words[i])]
            if len(items) % 2 == 0:  # swap two neighbouring, different plain words
                spots = [i for i in plain if i + 1 in plain and words[i] != words[i + 1]]
                if not spots:
                    continue
                i = rng.choice(spots)
                bad = words[:i] + [words[i + 1], words[i]] + words[i + 2:]
                edit = "swap"
            else:  # one plain word replaced by a word from another document
                if not plain or not donors:
                    continue
                i = rng.choice(plain)
                word = rng.choice(donors)
                if word == words[i]:
                    continue
                bad = words[:i] + [word] + words[i + 1:]
                edit = "replace"
            choices = [ss[k], " ".join(bad)]
            gold = rng.randrange(2)
            if gold:
                choices.reverse()
            items.append({"id": f"{PAIRS}-{len(items)}", "source_id": doc_id, "query": "",
                          "choices": choices, "gold": gold, "edit": edit})
    rng.shuffle(items)
    return items


def write_demo_tasks(raw: Iterable[str | Path], out: str | Path, n_test: int = 200,
                     n_train: int = 16, held_out_fraction: float = 0.05, seed: int = 0,
                     overwrite: bool = False) -> dict:
    """Build the three tasks (once: an existing manifest with the same settings is reused)."""
    out = Path(out)
    settings = {"raw": [str(p) for p in raw], "n_test": n_test, "n_train": n_train,
                "held_out_fraction": held_out_fraction, "seed": seed,
                "tasks": [CLOZE, LASTWORD, PAIRS]}
    manifest_path = out / "manifest.json"
    if manifest_path.is_file() and not overwrite:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("settings") == settings:
            return manifest
    docs = read_documents(settings["raw"])
    cloze, last = build_items(docs, held_out_fraction, seed=seed)
    pairs = build_pairs(docs, held_out_fraction, seed=seed)
    counts = {}
    for name, items in ((CLOZE, cloze), (LASTWORD, last), (PAIRS, pairs)):
        if len(items) < n_train + 10:
            raise LokiError(f"only {len(items)} {name} items from the held-out documents; "
                            "raise held_out_fraction or give more text")
        splits = {"train": items[:n_train], "test": items[n_train:n_train + n_test]}
        (out / name).mkdir(parents=True, exist_ok=True)
        for split, rows in splits.items():
            (out / name / f"{split}.jsonl").write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        counts[name] = {k: len(v) for k, v in splits.items()}
    manifest = {"settings": settings, "counts": counts,
                "held_out_ids": sorted({r["source_id"] for r in cloze + last + pairs}),
                "decontamination_fields": ["query", "choices", "answer"],
                "files": {n: str(out / n / "test.jsonl") for n in counts}}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    from jsonargparse import ActionConfigFile, ArgumentParser

    p = ArgumentParser(prog="python -m loki.eval.demo_tasks", description=__doc__.split("\n")[0])
    p.add_argument("--config", action=ActionConfigFile)
    p.add_argument("--raw", type=list[str], default=["data/demo/raw"], help="JSONL files/folders")
    p.add_argument("--out", type=str, default="data/demo/tasks", help="task folder")
    p.add_argument("--n_test", type=int, default=200, help="scored items per task")
    p.add_argument("--n_train", type=int, default=16, help="few-shot pool per task")
    p.add_argument("--held_out_fraction", type=float, default=0.05, help="documents held out")
    p.add_argument("--seed", type=int, default=0, help="distractor sampling and order")
    p.add_argument("--overwrite", type=bool, default=False, help="rebuild even if cached")
    cfg = p.parse_args(argv)
    m = write_demo_tasks(cfg.raw, cfg.out, cfg.n_test, cfg.n_train, cfg.held_out_fraction,
                         cfg.seed, cfg.overwrite)
    print(json.dumps(m["counts"]))


if __name__ == "__main__":
    main()

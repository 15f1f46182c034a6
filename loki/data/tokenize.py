"""``loki tokenize``: filtered documents -> token shards, one shard folder per source.

Reads the filter's output (datatrove ``*.jsonl.gz``), plain ``*.jsonl`` and ``*.parquet`` (keys:
``text`` and ``metadata.source``; a top-level ``source`` is accepted too) and ``*.txt`` files (one
document per file, tagged ``--default_source``), all UTF-8. A source tag names its shard folder,
so it is made of letters, digits, underscores, dots and hyphens. Each document is encoded with
the configured tokenizer (tiktoken's batch API) and written followed by end-of-text; documents
with empty text are skipped and counted. A bad file, record or tag stops the run with one line
naming it (``<file>:<line>``), and a file named twice is read once.

Files are read in the order given (a folder's or a glob's files sorted) and split into ``--tasks``
contiguous runs, one datatrove task each; every task writes its own shards and partial manifest,
and a final merge renumbers them into one shard set and manifest per source, so the same inputs
and task count give byte-identical shards and the documents come in the same order for any task
count. The new set is built beside the old one (``<output>/.tokenize-*``) and swapped in at the
end: a run that fails before the swap leaves the output folder as it was, and one stopped during
the swap (a rename per source) leaves each source with either its earlier set or its new one, whole.
A run killed outright leaves that folder
behind: the next run into the same output puts back an earlier set left in it and removes it,
saying so, and refuses one that may belong to a run still going. datatrove's logs go to
``runs/logs/tokenize.log`` (``--verbose``: to the terminal); the console gets a summary.

    loki tokenize --config experiments/tokenize/demo.yaml
    loki tokenize --inputs 'runs/filter/output/*.jsonl.gz' --output data/shards --tokenizer cl100k_base
    loki tokenize --config experiments/tokenize/demo.yaml --tasks 4 --workers 4
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from loki.data.tokenize_inputs import check_source, expand_inputs, read_documents
from loki.data.tokenize_staging import SOURCES, make_staging, put_back, recover_staging, swap_in
from loki.errors import LokiError
from loki.output import check_writable

DESCRIPTION = " ".join(__doc__.split("\n\n")[:2]).replace("``", "")  # --help: plain text


def load_tokenizer(spec: str):
    """The project tokenizer for ``spec`` ("cl100k_base" or a saved tokenizer's path)."""
    from loki.tokenizer import LokiTokenizer

    return LokiTokenizer.from_spec(spec)


def tokenizer_info(tok, spec: str) -> dict:
    return {"spec": str(spec), "name": tok.name, "vocab_hash": tok.vocab_hash,
            "vocab_size": int(tok.vocab_size), "eot_id": int(tok.eot_id)}


def plan_tasks(files: list[Path], tasks: int) -> list[list[Path]]:
    """Contiguous runs of ``files`` (sorted), balanced by size: concatenating the tasks' outputs
    in task order gives the documents in the same order as one task."""
    sizes = np.cumsum([max(1, f.stat().st_size) for f in files])
    cuts = np.searchsorted(sizes, sizes[-1] * np.arange(1, tasks) / tasks, side="left") + 1
    cuts = np.minimum(cuts, len(files))
    bounds = [0, *cuts.tolist(), len(files)]
    return [files[bounds[r]:max(bounds[r], bounds[r + 1])] for r in range(tasks)]


def tokenize_part(files: list[Path], folder: Path, tokenizer: str, shard_tokens: int,
                  default_source: str, batch_documents: int, inputs: list[str]) -> dict:
    """One task: its files -> ``<folder>/sources/<source>/`` shard sets with partial manifests.

    Documents with empty text are skipped and counted. Returns {source: {"documents", "tokens",
    "empty"}}, also written as ``<folder>/summary.json``.
    """
    from loki.data.shard_writer import ShardWriter

    tok = load_tokenizer(tokenizer)
    info = tokenizer_info(tok, tokenizer)
    writers: dict[str, ShardWriter] = {}
    summary: dict[str, dict] = {}
    for path in files:
        docs = read_documents(path, default_source)
        while batch := list(itertools.islice(docs, batch_documents)):
            for source, _ in batch:
                summary.setdefault(source, {"documents": 0, "tokens": 0, "empty": 0})
            kept = [(s, t) for s, t in batch if t]
            for source, _ in batch:
                if source not in writers and any(s == source for s, _ in kept):
                    writers[source] = ShardWriter(folder / SOURCES / source, source, info, shard_tokens,
                                                  extra={"inputs": inputs})
            for s, t in batch:
                summary[s]["empty"] += not t
            for (source, _), ids in zip(kept, tok.encode_batch([t for _, t in kept])):
                writers[source].add_document(ids)
                summary[source]["documents"] += 1
                summary[source]["tokens"] += len(ids) + 1
    for w in writers.values():
        w.close()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary, sort_keys=True))
    return summary


def merge_parts(staging: Path, tasks: int) -> dict[str, dict]:
    """Every task's shards, renumbered in task order, under ``<staging>/sources/<source>/``, one
    manifest per source (the partial manifests' shard entries, file names changed only)."""
    from loki.data.shards import MANIFEST

    merged: dict[str, dict] = {}
    empty: dict[str, int] = {}
    for r in range(tasks):
        part = staging / "parts" / f"{r:05d}"
        summary = json.loads((part / "summary.json").read_text())
        for source, counts in summary.items():
            empty[source] = empty.get(source, 0) + counts["empty"]
        for source in sorted(summary):
            src = part / SOURCES / source
            if not (src / MANIFEST).exists():
                continue  # this task saw only empty documents of this source
            manifest = json.loads((src / MANIFEST).read_text())
            target = merged.setdefault(source, {**manifest, "shards": []})
            dest = staging / SOURCES / source
            dest.mkdir(parents=True, exist_ok=True)
            for shard in manifest["shards"]:
                stem = f"{source}-{len(target['shards']):05d}"
                entry = dict(shard, tokens=f"{stem}.tokens", docs=f"{stem}.docs")
                os.replace(src / shard["tokens"], dest / entry["tokens"])
                os.replace(src / shard["docs"], dest / entry["docs"])
                target["shards"].append(entry)
    for source, manifest in merged.items():
        manifest["num_tokens"] = sum(s["num_tokens"] for s in manifest["shards"])
        manifest["num_documents"] = sum(s["num_documents"] for s in manifest["shards"])
        manifest["empty_documents_skipped"] = empty.get(source, 0)
        tmp = staging / SOURCES / source / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(staging / SOURCES / source / MANIFEST)
    return merged


def tokenize_files(files: list[Path], output: str | Path, tokenizer: str = "cl100k_base",
                   shard_tokens: int = 1 << 28, default_source: str = "web",
                   batch_documents: int = 256, log=print, tasks: int = 1,
                   workers: int = 1) -> dict[str, dict]:
    """Write ``<output>/<source>/`` shard folders with ``tasks`` datatrove tasks (``workers`` at
    once); returns {source: manifest}.

    The new set is built in ``<output>/.tokenize-<id>/`` and swapped in at the end, so a run that
    fails leaves an earlier set in ``output`` untouched, and removes the folders it created. The
    staging folders of runs killed outright are recovered first (``recover_staging``).
    """
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.utils.logging import setup_default_logger

    from loki.data.tokenize_task import TokenizeTask

    output = Path(output)
    check_writable(output)
    if tasks < 1 or workers < 1 or shard_tokens < 1:
        raise LokiError("tasks, workers and shard_tokens must be >= 1")
    check_source(default_source, "default_source")
    load_tokenizer(tokenizer)  # a bad tokenizer fails here, before any task starts
    if output.is_dir():
        recover_staging(output, lambda line: log(f"loki tokenize: {line}"))
    made = list(itertools.takewhile(lambda p: not p.exists(), [output, *output.parents]))
    output.mkdir(parents=True, exist_ok=True)
    staging = make_staging(output)
    started, done = time.time(), False
    try:
        parts = [[str(f) for f in part] for part in plan_tasks(files, tasks)]
        step = TokenizeTask(parts, str(staging), str(tokenizer), shard_tokens, default_source,
                            batch_documents, [str(f) for f in files])
        # datatrove logs this process's lines to the sys.stderr of its import, which may be the
        # closed log of an earlier quiet console: to the stderr of now instead
        setup_default_logger()
        LocalPipelineExecutor([step], tasks=tasks, workers=min(workers, tasks),
                              logging_dir=str(staging / "logs"), start_method="spawn").run()
        for error in sorted(staging.glob("parts/*/error.txt")):
            raise LokiError(error.read_text())
        manifests = merge_parts(staging, tasks)
        if not manifests:
            raise LokiError(f"no documents in {', '.join(map(str, files))}")
        swap_in(staging, output, sorted(manifests))
        done = True
    finally:
        if not done:  # stopped in the middle of the swap: the earlier sets go back
            put_back(staging, output)
        shutil.rmtree(staging, ignore_errors=True)
        for folder in [] if done else made:  # deepest first
            try:
                folder.rmdir()
            except OSError:  # not empty: it holds an earlier set or someone else's files
                break
    seconds = time.time() - started
    for source, m in manifests.items():
        empty = m["empty_documents_skipped"]
        log(f"loki tokenize: {source}: {_count(m['num_documents'], 'document')}, "
            f"{_count(m['num_tokens'], 'token')} in {_count(len(m['shards']), 'shard')}"
            + (f" ({_count(empty, 'empty document')} skipped)" if empty else "")
            + f" -> {output / source}")
    n_tokens = sum(m["num_tokens"] for m in manifests.values())
    log(f"loki tokenize: {_count(n_tokens, 'token')} from {_count(len(files), 'file')} in "
        f"{seconds:.1f} s ({n_tokens / max(seconds, 1e-9):,.0f} tokens/s; "
        f"{_count(tasks, 'task')}, {_count(min(workers, tasks), 'worker')})")
    return manifests


def _count(n: int, thing: str) -> str:
    return f"{n:,} {thing}{'' if n == 1 else 's'}"


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="loki tokenize", description=DESCRIPTION)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file")
    parser.add_argument("--inputs", type=list[str], required=True,
                        help="files, folders or globs of *.jsonl.gz / *.jsonl / *.parquet / *.txt")
    parser.add_argument("--output", type=str, required=True,
                        help="folder that receives one shard folder per source")
    parser.add_argument("--tokenizer", type=str, default="cl100k_base",
                        help="'cl100k_base' or the folder of a tokenizer saved by 'loki "
                             "tokenizer prune'")
    parser.add_argument("--shard_tokens", type=int, default=1 << 28,
                        help="tokens per shard file before starting the next one")
    parser.add_argument("--default_source", type=str, default="web",
                        help="source tag for documents without metadata.source (it names "
                             "their shard folder)")
    parser.add_argument("--tasks", type=int, default=1,
                        help="datatrove tasks (contiguous runs of the input files); the same "
                             "inputs and task count give byte-identical shards")
    parser.add_argument("--workers", type=int, default=1,
                        help="tasks run at once (local processes; 1 = in this process)")
    return parser


def parse_config(path: str | Path):
    """Parse (and type-check) a ``loki tokenize`` YAML config without running it."""
    return build_parser().parse_args(["--config", str(path)])


def main(argv: list[str] | None = None) -> None:
    """``loki tokenize``: its quiet console (datatrove's logs in ``runs/logs/tokenize.log``,
    ``--verbose`` to keep them here) is opened by ``loki.cli`` around this."""
    from loki.console import say

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    check_writable(args.output)  # before the inputs are even listed
    files = expand_inputs(args.inputs, log=lambda line: say(f"loki tokenize: {line}"))
    tokenize_files(files, args.output, args.tokenizer, args.shard_tokens,
                   args.default_source, log=say, tasks=args.tasks, workers=args.workers)


if __name__ == "__main__":  # datatrove's spawned workers re-import this module
    try:
        main()
    except LokiError as err:
        print(f"loki tokenize: error: {err}", file=sys.stderr)
        sys.exit(2)

"""``loki eval prepare-data``: write the benchmark files the recipe reads offline.

    loki eval prepare-data --data_dir data/eval                       # online, the six tasks
    loki eval prepare-data --data_dir data/eval --from_dir /mnt/exported-benchmarks

Writes ``<data_dir>/<dataset>/<split>.jsonl``, the layout the packaged ``*_local`` tasks read
(``loki/eval/tasks/``): the final benchmark evaluation (``suite.offline: true``) and the
filter's decontamination stage (``decontam.offline: true``) both read it, so compute nodes never
reach the hub. Which hub dataset, config and splits a task needs is read from lm-eval's own task
file (the one the packaged template ``include``s), so the rows are exactly what lm-eval would
download. Sources:

- online (default): ``datasets.load_dataset`` from the hub, or from the ``HF_HOME`` cache when
  ``HF_DATASETS_OFFLINE=1`` (what ``loki`` sets unless told otherwise);
- ``--from_dir DIR``: files exported elsewhere, ``DIR/<dataset>/<split>.{jsonl,json,parquet,csv}``
  or a ``save_to_disk`` folder ``DIR/<dataset>``, converted to JSON lines.

Every source is found before anything is written; each file is written to a temporary name and
renamed; ``<data_dir>/manifest.json`` lists rows and sha256 per file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from loki._optional import require
from loki.errors import LokiError
from loki.eval.local_tasks import TEMPLATES, data_files, packaged_tasks

# Table 1 of the paper, as lm-eval task names.
PAPER_TASKS = ["arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k"]
# lm-eval's MMLU subject tasks name one subject each; its "all" config holds every subject
# (with a ``subject`` column), which is what the single ``mmlu_local`` task reads.
MMLU_ALL = "all"
SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass(frozen=True)
class TaskData:
    """Where one packaged local task's rows come from and go to."""

    task: str
    """Packaged local task name (``mmlu_local``)."""
    folder: str
    """``<data_dir>/<folder>/<split>.jsonl``."""
    splits: tuple[str, ...]
    """Splits the template reads."""
    hub_path: str
    """Hub dataset id, from lm-eval's task file."""
    hub_name: str | None
    """Hub dataset config."""


def _lm_eval_yaml(path: Path) -> dict[str, Any]:
    """An lm-eval task file with its ``include`` chain merged (own keys win); ``!function``
    tags are read as plain strings (only the dataset keys matter here)."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, tag, node: None)
    cfg = yaml.load(path.read_text(), Loader=Loader) or {}
    if "include" in cfg:
        base = _lm_eval_yaml(path.parent / cfg.pop("include"))
        cfg = {**base, **cfg}
    return cfg


def task_data(name: str) -> TaskData:
    """Resolve a task name (``mmlu``, ``mmlu_local``, ``arc_challenge``) to its data."""
    local = name if name in packaged_tasks() else f"{name}_local"
    if local not in packaged_tasks():
        raise LokiError(f"no packaged local task for {name!r}; known: "
                        + ", ".join(t.removesuffix("_local") for t in packaged_tasks()))
    text = (TEMPLATES / f"{local}.yaml").read_text()
    own = yaml.safe_load(text)
    if not str(own.get("include", "")).startswith("LM_EVAL_TASKS/"):
        raise LokiError(f"task {name!r} is built from local text (e.g. loki.eval.demo_tasks), "
                        "not from an lm-eval dataset; there is nothing to download")
    lm_eval_tasks = Path(require("lm_eval.tasks", "eval").__file__).parent
    base = _lm_eval_yaml(lm_eval_tasks / own["include"].removeprefix("LM_EVAL_TASKS/"))
    files = data_files(text)
    folders = {Path(f).parent.name for f in files.values()}
    if len(folders) != 1 or not base.get("dataset_path"):
        raise LokiError(f"cannot tell where {local}'s data comes from (template {files})")
    hub_name = base.get("dataset_name") or (MMLU_ALL if base["dataset_path"] == "cais/mmlu"
                                            else None)
    return TaskData(local, folders.pop(), tuple(files), base["dataset_path"], hub_name)


def _local_source(from_dir: Path, td: TaskData, split: str) -> tuple[str, Path]:
    folder = from_dir / td.folder
    for suffix in SUFFIXES:
        if (folder / f"{split}{suffix}").is_file():
            return suffix.lstrip("."), folder / f"{split}{suffix}"
    if (folder / "dataset_dict.json").is_file():
        return "disk", folder
    raise LokiError(f"no {split!r} split of {td.folder} under {from_dir}: expected "
                    f"{folder}/{split}.jsonl (or .json/.parquet/.csv) or a save_to_disk folder")


def _rows(source: tuple[str, Path] | None, td: TaskData, split: str):
    datasets = require("datasets", "eval")
    if source is None:
        try:
            return datasets.load_dataset(td.hub_path, td.hub_name, split=split)
        except Exception as err:  # offline without a cache, gated, renamed ...
            raise LokiError(
                f"cannot load {td.hub_path} ({td.hub_name}) split {split!r}: {err}. Online: set "
                "HF_DATASETS_OFFLINE=0 HF_HUB_OFFLINE=0; offline: pass --from_dir") from err
    kind, path = source
    if kind == "disk":
        return datasets.load_from_disk(str(path))[split]
    loader = "json" if kind in ("jsonl", "json") else kind
    return datasets.load_dataset(loader, data_files=str(path), split="train")


def _write_jsonl(rows, dst: Path) -> dict[str, Any]:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    digest, n = hashlib.sha256(), 0
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            line = json.dumps(row, ensure_ascii=False, default=str) + "\n"
            f.write(line)
            digest.update(line.encode())
            n += 1
    os.replace(tmp, dst)
    return {"rows": n, "sha256": digest.hexdigest()}


def prepare_data(tasks: list[str], data_dir: str | Path, from_dir: str | Path | None = None,
                 overwrite: bool = False) -> dict[str, Any]:
    """Write every split of ``tasks`` under ``data_dir``; returns the manifest."""
    data_dir = Path(data_dir)
    wanted = [task_data(t) for t in dict.fromkeys(tasks)]
    plan = []
    for td in wanted:
        for split in td.splits:
            dst = data_dir / td.folder / f"{split}.jsonl"
            if dst.is_file() and not overwrite:
                continue
            source = None if from_dir is None else _local_source(Path(from_dir), td, split)
            plan.append((td, split, source, dst))
    manifest_path = data_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    for td, split, source, dst in plan:
        entry = _write_jsonl(_rows(source, td, split), dst)
        origin = (f"hub:{td.hub_path}:{td.hub_name}" if source is None else str(source[1]))
        manifest[f"{td.folder}/{split}"] = {"task": td.task, "source": origin, **entry}
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = manifest_path.with_name("manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, manifest_path)
    return manifest


def main(argv: list[str] | None = None) -> None:
    from jsonargparse import ActionConfigFile

    from loki.tool_parser import tool_parser

    p = tool_parser(prog="loki eval prepare-data", description=__doc__.split("\n")[0])
    p.add_argument("--config", action=ActionConfigFile)
    p.add_argument("--tasks", type=list[str], default=PAPER_TASKS,
                   help="lm-eval task names with a packaged local variant (default: Table 1)")
    p.add_argument("--data_dir", type=str, required=True,
                   help="output root: <data_dir>/<dataset>/<split>.jsonl")
    p.add_argument("--from_dir", type=str | None, default=None,
                   help="read exported files here instead of the hub")
    p.add_argument("--overwrite", type=bool, default=False,
                   help="rewrite files that already exist (default: keep them)")
    cfg = p.parse_args(argv)
    manifest = prepare_data(cfg.tasks, cfg.data_dir, cfg.from_dir, cfg.overwrite)
    for key, entry in sorted(manifest.items()):
        print(f"{key:<28} {entry['rows']:>7} rows  {entry['source']}")
    print(f"benchmark files in {cfg.data_dir}")

"""Stage signatures: a finished stage is reused only when what decided its results is unchanged.

datatrove's completion markers say that a task ended, not what it was run with. Each stage's
signature hashes the signature of the stage it reads, the settings that decide its results
(``Stage.settings``, set where the stage is built) and, for the stages that read files from
outside work_dir, those files: the input files' (path, size, mtime) for the clean stage (remote
inputs: their patterns), the benchmark task files for the index, the labelled data or the
trained head for the quality stages. ``executor.tasks`` counts (it changes the shard layout);
settings that change only how fast a stage runs (workers, Slurm or Ray resources) do not.

The signature is stored in ``<work>/logs/<stage>/signature.json`` before the stage runs (on Slurm,
before the chain is submitted). On the next run a stage whose stored signature differs, or whose
product outside work_dir is gone, is redone: its logs (completion markers), its documents, its
removed documents and the files it writes in work_dir are deleted first, and every stage after it
changes signature with it. Unchanged stages are reused, even after a changed one that they do
not read (a new quality threshold does not redo the embeddings).
"""

from __future__ import annotations

import dataclasses
import glob as globlib
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from fsspec.core import url_to_fs

from loki.filtering.stages import Stage


@dataclass(frozen=True)
class StageRef:
    """A settings value that stands for another stage's signature (e.g. the benchmark index)."""

    name: str


def section(obj: Any, *leave_out: str) -> dict:
    """A config dataclass as a dict, without the fields that do not change results."""
    return {k: v for k, v in dataclasses.asdict(obj).items() if k not in leave_out}


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _file_id(path: str) -> list:
    """(path, size, mtime) of a local file: a new or edited file changes it."""
    try:
        st = os.stat(path)
    except OSError:
        return [path, "absent"]
    return [path, st.st_size, st.st_mtime_ns]


def _files_under(path: str) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, files in os.walk(path) for f in files)


def files_id(paths: list[str]) -> str:
    """One digest of local files, folders (every file under them) and globs; a URL or hub id
    counts by its text (listing a bucket on every run would cost more than it tells)."""
    from loki.filtering.readers import split_glob

    ids = []
    for path in paths:
        if "://" in path:
            ids.append([path])
            continue
        folder, pattern = split_glob(path)
        if pattern is not None:
            matched = sorted(globlib.glob(os.path.join(folder, pattern), recursive=True))
            ids += [_file_id(p) for f in matched for p in (_files_under(f) or [f])]
        elif os.path.isdir(path):
            ids += [_file_id(p) for p in _files_under(path)]
        else:
            ids.append([path] if not os.path.exists(path) else _file_id(path))
    return _digest(ids)


def stored(work: str, stage: str) -> dict | None:
    """The signature record a stage's last run stored, if any."""
    return _read_json(f"{work}/logs/{stage}", "signature.json")


def _read_json(folder: str, name: str) -> dict | None:
    from datatrove.io import get_datafolder

    df = get_datafolder(folder)
    if not df.exists(name):
        return None
    try:
        with df.open(name) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None  # unreadable: as if absent, so the stage is redone


def trains_head(model_path: str, work: str) -> bool:
    """Whether the quality head is this work_dir's to train: absent, or the one its
    ``quality_train`` stage wrote (the hash that job recorded). A head found any other way is an
    input, never overwritten."""
    if not os.path.exists(model_path):
        return True
    record = head_record(work)
    return bool(stored(work, "quality_train") and record
                and record.get("sha256") == _sha256(model_path))


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def quality_head(model_path: str, work: str) -> Any:
    """What the quality stage scores with: for a head the ``quality_train`` stage trains or
    trained (``trains_head``), the signature of that training, so the head is the same input
    before and after the job that writes it; else the head's content hash."""
    if trains_head(model_path, work):
        return {"trained_by": StageRef("quality_train")}
    return {"sha256": _sha256(model_path)}


def head_record(work: str) -> dict | None:
    return _read_json(f"{work}/logs/quality_train", "head.json")


def record_trained_head(model_path: str, work: str) -> None:
    """Called by the training job once the head is saved (see ``quality_head``)."""
    from datatrove.io import get_datafolder

    with get_datafolder(f"{work}/logs/quality_train").open("head.json", "w") as f:
        json.dump({"sha256": _sha256(model_path)}, f)


def signatures(stages: list[Stage]) -> dict[str, dict]:
    """{stage name: {"signature", "settings"}}: each chained stage hashes the one before it."""
    out: dict[str, dict] = {}
    previous = None
    for stage in stages:
        def resolve(value):
            if isinstance(value, StageRef):
                return out[value.name]["signature"] if value.name in out else None
            if isinstance(value, dict):
                return {k: resolve(v) for k, v in value.items()}
            return value

        settings = resolve(stage.settings)
        reads = previous if stage.chained else None
        out[stage.name] = {"signature": _digest([stage.name, reads, settings]),
                           "settings": settings}
        if stage.chained:
            previous = out[stage.name]["signature"]
    return out


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def _why(stage: Stage, record: dict | None, new: dict, had_results: bool, missing: bool) -> str:
    if record is None:
        return "no record of what it ran with" if had_results else "new"
    if record.get("signature") == new["signature"] and missing:
        return f"{stage.product} is missing"
    keys = _changed_keys(record.get("settings") or {}, new["settings"])
    return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")


def invalidate(work: str, stages: list[Stage]) -> tuple[list[str], str | None]:
    """Deletes what every changed stage made and stores the new signatures. Returns the stages
    redone (those that had results) and the console line naming the stages that changed (None
    when nothing had results: a first run)."""
    from datatrove.io import get_datafolder

    new = signatures(stages)
    invalid, redone, causes = [], [], []
    for stage in stages:
        record = stored(work, stage.name)
        logs = f"{work}/logs/{stage.name}"
        had_results = _exists(logs)
        missing = stage.product is not None and had_results and not _exists(stage.product)
        if record and record.get("signature") == new[stage.name]["signature"] and not missing:
            continue
        for path in [logs, stage.output, f"{work}/removed/{stage.name}", *stage.writes]:
            if path and _exists(path):
                fs, at = url_to_fs(path)
                fs.rm(at, recursive=True)
        with get_datafolder(logs).open("signature.json", "w") as f:
            json.dump(new[stage.name], f, indent=1, default=str)
        if not _follows(stage, stages, invalid):
            causes.append((stage.name, _why(stage, record, new[stage.name], had_results, missing)))
        invalid.append(stage.name)
        if had_results:
            redone.append(stage.name)
    if not redone:
        return [], None
    changed = "; ".join(f"{name} ({why})" if why else name for name, why in causes)
    return redone, (f"changed since the last run in {work}: {changed}; redoing "
                    f"{', '.join(redone)} (their earlier results are deleted)")


def _follows(stage: Stage, stages: list[Stage], invalid: list[str]) -> bool:
    """Whether ``stage`` changed because a stage it reads did: a chained stage after a changed
    chained one, or a stage whose settings name a changed stage."""
    before = stages[: stages.index(stage)]
    if stage.chained and any(s.chained and s.name in invalid for s in before):
        return True
    return any(isinstance(v, StageRef) and v.name in invalid for v in _values(stage.settings))


def _values(settings: Any):
    if isinstance(settings, dict):
        for value in settings.values():
            yield from _values(value)
    else:
        yield settings


def _exists(path: str) -> bool:
    fs, at = url_to_fs(path)
    return fs.exists(at)

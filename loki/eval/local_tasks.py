"""Offline lm-eval tasks: the packaged YAML templates under ``loki/eval/tasks/`` bound to local
JSON-lines files.

A template names its files as ``LOKI_DATA_DIR/<dataset>/<split>.jsonl`` and may ``include`` one of
lm-eval's own task files (``LM_EVAL_TASKS/...``) so that prompts, metrics and filters stay exactly
lm-eval's. ``prepare_tasks`` writes the bound copies into a folder for
``TaskManager(include_path=...)`` after checking that every file exists, and checks that every
requested task is known (packaged or built into lm-eval) before anything is loaded.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import yaml

from loki import atomic
from loki._optional import require
from loki.errors import LokiError

log = logging.getLogger(__name__)
TEMPLATES = resources.files("loki.eval") / "tasks"


def packaged_tasks() -> list[str]:
    """Names of the local task templates shipped with the package."""
    return sorted(p.name.removesuffix(".yaml") for p in TEMPLATES.iterdir()
                  if p.name.endswith(".yaml"))


def data_files(task_yaml: str) -> dict[str, str]:
    """split -> file of a bound task YAML (its own keys only; includes are lm-eval's)."""
    cfg = yaml.safe_load(task_yaml)
    return dict((cfg.get("dataset_kwargs") or {}).get("data_files") or {})


def bind_tasks(tasks: list[str], data_dir: str | Path, option: str = "data_dir") -> dict[str, str]:
    """{name: YAML text} for the packaged templates among ``tasks``, bound to ``data_dir``;
    writes nothing. Raises LokiError when a local task's data file is missing, naming the
    setting that points elsewhere as ``option`` (a command line's ``--suite.data_dir``). Other
    names are left to lm-eval."""
    lm_eval_tasks = Path(require("lm_eval.tasks", "eval").__file__).parent
    data_dir = Path(data_dir).resolve()
    bound = {}
    for name in sorted(set(tasks) & set(packaged_tasks())):
        text = (TEMPLATES / f"{name}.yaml").read_text()
        text = text.replace("LOKI_DATA_DIR", str(data_dir)).replace(
            "LM_EVAL_TASKS", str(lm_eval_tasks))
        missing = [f for f in data_files(text).values() if not Path(f).is_file()]
        if missing:
            how = ("loki demo writes them, in its tasks stage" if name.startswith("loki_demo_")
                   else "put the dataset's rows there as JSON lines")
            raise LokiError(f"local data for task {name!r} is missing: {', '.join(missing)} "
                            f"({how}; or point {option} elsewhere)")
        bound[name] = text
    return bound


def prepare_tasks(tasks: list[str], data_dir: str | Path, out_dir: str | Path) -> Path:
    """Bind the packaged templates among ``tasks`` to ``data_dir`` (``bind_tasks``) and write
    them to ``out_dir``, each atomically and only once all are bound; returns ``out_dir`` for
    ``TaskManager(include_path=...)``."""
    bound = bind_tasks(tasks, data_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in bound.items():
        atomic.write_text(out_dir / f"{name}.yaml", text)
    return out_dir


def task_manager(tasks: list[str], data_dir: str | Path, out_dir: str | Path,
                 builtin: bool | None = None):
    """A ``TaskManager`` that knows the bound local tasks (and lm-eval's own unless
    ``builtin=False``; by default only when a requested task is not local, because indexing
    lm-eval's ~15k task files takes seconds). Unknown task names are a LokiError."""
    include = prepare_tasks(tasks, data_dir, out_dir)
    local = set(packaged_tasks())
    if builtin is None:
        builtin = any(t not in local for t in tasks)
    tm = require("lm_eval.tasks", "eval").TaskManager(
        include_path=str(include), include_defaults=builtin)
    unknown = [t for t in tasks if t not in local and t not in tm.all_tasks]
    if unknown:
        raise LokiError(
            f"unknown task(s) {', '.join(unknown)}; local tasks: {', '.join(sorted(local))}"
            + ("; or any lm-eval task name (those download from the hub)" if builtin else ""))
    return tm


def main(argv: list[str] | None = None) -> None:
    """Write bound task YAMLs for lm-eval's own CLI (``--include_path <out>``)."""
    from jsonargparse import ArgumentParser

    p = ArgumentParser(prog="python -m loki.eval.local_tasks", description=main.__doc__)
    p.add_argument("--tasks", type=list[str], default=packaged_tasks(), help="local task names")
    p.add_argument("--data_dir", type=str, required=True, help="<data_dir>/<dataset>/<split>.jsonl")
    p.add_argument("--out", type=str, required=True, help="folder for the bound YAMLs")
    cfg = p.parse_args(argv)
    unknown = set(cfg.tasks) - set(packaged_tasks())
    if unknown:
        raise LokiError(f"unknown local task(s) {', '.join(sorted(unknown))}; "
                        f"choose from: {', '.join(packaged_tasks())}")
    print(prepare_tasks(cfg.tasks, cfg.data_dir, cfg.out))


if __name__ == "__main__":  # one-line errors, as the loki tools print them
    from loki.cli import module_main

    module_main("loki.eval.local_tasks", "python -m loki.eval.local_tasks")

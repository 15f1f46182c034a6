"""Every YAML under experiments/ parses, and every key in it carries a comment."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
YAMLS = sorted((ROOT / "experiments").rglob("*.yaml"))
FIT_KEYS = {"model", "data", "trainer"}


def _keys_without_comment(path: Path) -> list[str]:
    """Mapping keys whose line has no trailing comment and no comment line right above."""
    missing, previous = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "- ", "-\t")) and ":" in line and line != "---":
            key, _, rest = line.partition(":")
            is_key = key.replace("_", "").replace("-", "").replace(".", "").isalnum()
            if is_key and "#" not in rest and not previous.startswith("#"):
                missing.append(key)
        if line:
            previous = line
    return missing


def test_there_are_experiments():
    names = {p.relative_to(ROOT / "experiments").as_posix() for p in YAMLS}
    assert {"small-cpu.yaml", "loki-1.4b.yaml", "demo.yaml"} <= names


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_key_is_commented(path):
    assert _keys_without_comment(path) == []


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_yaml_parses_with_its_parser(path):
    config = yaml.safe_load(path.read_text())
    assert isinstance(config, dict)
    if FIT_KEYS & set(config):
        from loki.lightning_cli import LokiCLI

        class ParseOnly(LokiCLI):
            def instantiate_classes(self) -> None:  # parsing and type checks only
                pass

        cli = ParseOnly(args=["--config", str(path)], run=False)
        assert cli.config["model"]["config"]
        return
    # Tool configs: the tool named by the folder parses them with its own parser.
    tool = {"data": "loki.filtering.cli", "tokenizer": "loki.tokenizer_cli",
            "distill": "loki.distill.cli", "eval": "loki.eval.cli",
            "tokenize": "loki.data.tokenize"}.get(path.parent.name)
    if path.name == "demo.yaml" and path.parent.name == "experiments":
        tool = "loki.demo"
    if tool is None:
        pytest.fail(f"no parser known for {path}")
    module = importlib.import_module(tool)
    module.parse_config(path)


def test_demo_preset_comments_name_every_demo_task():
    from loki.eval.presets import PRESETS

    tasks = [row.label.removeprefix("Demo ") for row in PRESETS["demo"]]
    lines = [line for path in YAMLS for line in path.read_text().splitlines()
             if line.strip().startswith("preset: demo")]
    assert lines
    for line in lines:
        comment = line.partition("#")[2]
        assert all(task in comment for task in tasks), (line, tasks)


@pytest.mark.parametrize("restarts", ["0", "2"])
def test_the_sbatch_script_resumes_a_requeued_job_from_the_newest_checkpoint(tmp_path,
                                                                               restarts):
    """``experiments/slurm/loki-1.4b.sbatch`` under stand-ins for srun and scontrol: the first
    run gets the user's arguments; a requeued one (SLURM_RESTART_COUNT > 0) ends with
    ``--ckpt_path last``, which wins over a --ckpt_path the first run was given."""
    import os
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", f'printf "%s\\n" "$@" > {tmp_path}/srun.args'),
                       ("scontrol", "echo node1; echo node2")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_JOB_NUM_NODES": "2",
           "SLURM_NTASKS_PER_NODE": "8", "SLURM_NTASKS": "16", "SLURM_JOB_NAME": "loki-1.4b",
           "SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": restarts}
    env.pop("LOKI_LOG_DIR", None)
    subprocess.run(["bash", str(ROOT / "experiments" / "slurm" / "loki-1.4b.sbatch"),
                    "--ckpt_path", "runs/first.ckpt"], cwd=tmp_path, env=env, check=True)
    args = (tmp_path / "srun.args").read_text().splitlines()
    assert args[:4] == ["--kill-on-bad-exit=1", "loki", "fit", "--config"]
    tail = ["--ckpt_path", "runs/first.ckpt"] + (["--ckpt_path", "last"] if restarts != "0" else [])
    assert args[-len(tail):] == tail and "--ckpt_path" not in args[:-len(tail)]
    assert args[-len(tail) - 2:-len(tail)] == ["--trainer.strategy.init_args.data_parallel_size",
                                               "16"]
    assert (tmp_path / "runs" / "slurm").is_dir()

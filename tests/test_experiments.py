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

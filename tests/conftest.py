"""Shared fixtures. Tests run offline on the CPU with tiny configs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

for key, value in (
    ("HF_HUB_OFFLINE", "1"),
    ("HF_DATASETS_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
    ("WANDB_MODE", "offline"),
    ("HF_HOME", str(ROOT / ".cache" / "hf")),
    ("TIKTOKEN_CACHE_DIR", str(ROOT / ".cache" / "tiktoken")),
):
    os.environ.setdefault(key, value)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _library_logs(tmp_path_factory) -> None:
    """Quiet commands run by the tests keep their library logs in the session's temp folder,
    not in the checkout's runs/logs beside a developer's own; the tests of that default
    location unset it."""
    os.environ["LOKI_LOG_DIR"] = str(tmp_path_factory.mktemp("logs"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """6 steps of a tiny ``loki fit`` run (``tests.helpers.fit_run``), checkpoints at steps 3
    and 6 (``data.tokenizer`` unset); made once per test module that asks for it."""
    from loki.cli import main
    from tests.helpers.fit_run import write_run

    folder = tmp_path_factory.mktemp("base")
    write_run(folder)
    main(["fit", "--config", str(folder / "run.yaml"), "--trainer.max_steps", "6"])
    return folder


@pytest.fixture
def run(base_run, tmp_path) -> Path:
    """A copy of the base run folder, its YAML pointing at the copy."""
    from tests.helpers.fit_run import write_run

    folder = tmp_path / "copy"
    shutil.copytree(base_run, folder)
    write_run(folder)
    return folder

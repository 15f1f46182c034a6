"""notebooks/: committed without outputs, and executed top to bottom on a tiny checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from loki.module import LokiLM
from tests.helpers.synthetic import SyntheticSteps

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_stripped(path: Path) -> None:
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, (
                f"{path.name} has outputs; strip them (e.g. `jupyter nbconvert "
                "--clear-output --inplace`) before committing")


def _checkpoints(tmp_path: Path) -> tuple[Path, Path]:
    """Two tiny Lightning checkpoints of one run, after steps 1 and 2."""
    module = LokiLM("tiny", vocab_size=512)
    every_step = ModelCheckpoint(dirpath=tmp_path, filename="{step}", every_n_train_steps=1,
                                 save_top_k=-1)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[every_step], default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(module, SyntheticSteps(n_steps=2))
    return tmp_path / "step=1.ckpt", tmp_path / "step=2.ckpt"


@pytest.mark.slow
def test_inspect_checkpoint_runs(tmp_path: Path, monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    first, second = _checkpoints(tmp_path)
    # as a user opens it: Jupyter starts the kernel in notebooks/, the path is the repository's
    monkeypatch.setenv("LOKI_CKPT", os.path.relpath(first, ROOT))
    monkeypatch.setenv("LOKI_CKPT_OTHER", str(second))
    monkeypatch.setenv("MPLCONFIGDIR", str(ROOT / ".cache" / "matplotlib"))
    # the kernel is a fresh interpreter: it finds `loki` through the path, like a user's would
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    nb = nbformat.read(ROOT / "notebooks" / "inspect_checkpoint.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=60, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute()
    text = "\n".join(out.get("text", "") + json.dumps(out.get("data", {}))
                     for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "byte-level fallback" in text
    assert "the same model at temperature 2" in text
    assert "relative difference" in text and "unchanged tensors: 0 of" in text
    images = sum("image/png" in out.get("data", {}) for cell in nb.cells
                 if cell.cell_type == "code" for out in cell.outputs)
    assert images >= 3  # ALiBi bias and two attention-map rows

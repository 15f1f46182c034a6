"""The training run folders of ``loki demo`` (``runs/demo-teacher``, ``runs/demo``): moving an
earlier run aside, finding the current run's files (never an archived run's), and reading back
what the fit stages report: validation losses and a sample of text from the checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

# what belongs to the demo itself, not to the training run in its folder: a redo keeps these
DEMO_PARTS = ("stages", "archive", "demo.log")


def archive(run: Path) -> Path | None:
    """Move a previous training run's files aside (nothing is deleted) so a redo starts afresh:
    everything in the run folder but the demo's own stage markers, log and archive, so that no
    output of the earlier run (an eval's results by another tool among them) stays to be taken
    for the new run's. Returns where they went."""
    parts = sorted(p for p in run.iterdir() if p.name not in DEMO_PARTS) if run.is_dir() else []
    if not parts:
        return None
    dest = run / "archive" / time.strftime("%Y%m%d-%H%M%S")
    dest.mkdir(parents=True)
    for part in parts:
        part.rename(dest / part.name)
    return dest


def archive_unresumable(run: Path) -> Path | None:
    """A run stopped before its first periodic checkpoint has no last.ckpt to resume from but
    may hold checkpoints (step-0, rollback); ``loki fit`` refuses a fresh run beside them, so
    they are moved aside like a redo's."""
    if (run / "checkpoints" / "last.ckpt").is_file() or not current_files(run, "*.ckpt"):
        return None
    return archive(run)


def current_files(run: Path, name: str) -> list[Path]:
    """Files called ``name`` under the run folder, leaving out archived earlier runs."""
    return sorted(p for p in run.rglob(name) if "archive" not in p.relative_to(run).parts)


def val_losses(run: Path) -> list[tuple[int, float]]:
    """(step, val/loss) pairs from the training run's CSV metrics under the run folder (not those
    of an evaluation of one of its checkpoints)."""
    from loki.metrics_csv import is_evaluation_log, read_rows

    out: dict[int, float] = {}
    for path in current_files(run, "metrics.csv"):
        if is_evaluation_log(path.relative_to(run)):  # `loki validate` of a checkpoint, not the run
            continue
        for row in read_rows(str(path))[1]:
            if row.get("val/loss"):
                out[int(row["step"])] = float(row["val/loss"])
    return sorted(out.items())


def sample_text(checkpoint: Path, prompt: str, max_new_tokens: int = 40) -> str:
    """``prompt`` and a seeded continuation of it by the checkpoint's model."""
    import torch

    from loki.module import load_model
    from loki.tokenizer import LokiTokenizer

    model, _, hparams = load_model(checkpoint)
    tokenizer = LokiTokenizer.from_spec(hparams.get("tokenizer") or "cl100k_base")
    idx = torch.tensor([tokenizer.encode(prompt)])
    gen = torch.Generator().manual_seed(0)
    out = model.generate(idx, max_new_tokens, temperature=0.8, top_k=40, generator=gen)
    return prompt + tokenizer.decode(out[0, idx.size(1):].tolist())

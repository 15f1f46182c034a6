"""Kill ``loki fit`` during checkpoint writes, resume, and compare with an uninterrupted run.

    python -m tests.helpers.kill_fit FOLDER KILLS SEED MAX_DELAY_MS [EXTRA LOKI FIT ARGS...]

Imports torch, Lightning and ``loki.cli`` once, then forks one child per ``loki fit`` (the
same ``loki.cli.main`` the command runs), so 20+ kills cost a fork each rather than a Python
start-up each. ``TMPDIR`` points at a folder under ``/dev/shm`` (tmpfs, another filesystem than
the run folder), as on most clusters. EXTRA can choose the strategy: under FSDP2
(``ModelParallelStrategy``) checkpoints are distributed folders (``loki.checkpoint_sharded``).

1. An uninterrupted run saves a checkpoint at every step (the reference weights).
2. Kill loop: a child resumes with ``--ckpt_path last`` (a requeued job's resume) and writes
   ``last.ckpt`` at every step; the parent watches the checkpoint folder for the temp file (or
   staged folder) of a write, waits a random 0 to MAX_DELAY_MS into the n-th write (n random in
   1..2) and sends SIGKILL. A kill counts as mid-write when a temp name is still there
   afterwards. After every kill ``last.ckpt`` must load and equal the reference at its step,
   bit for bit: weights and optimizer state. A kill between the two renames that move a folder
   into place leaves no ``last.ckpt`` until the next start completes the move; the parent does
   that as the next start would, and counts it.
3. A last child resumes to the end; its weights must equal the uninterrupted run's.

Prints one JSON line: kills, mid-write kills, kills between renames, steps, seconds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch

import loki.cli  # noqa: F401  (imported before the forks: each child starts warm)
import loki.lightning_cli  # noqa: F401
from loki.atomic import is_temp
from loki.checkpoint_sharded import SET_ASIDE_PREFIX, finish_interrupted_swaps
from tests.helpers.fit_run import write_run

MAX_STEPS = 40  # room for 20+ mid-write kills even when a start finishes a few saves


def _child(argv: list[str]) -> int:
    pid = os.fork()
    if pid == 0:  # the child: exactly what `loki fit` runs; never returns into the parent's code
        code = 0
        try:
            sys.stdout = sys.stderr = open(os.devnull, "w")
            loki.cli.main(argv)
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else 1
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def _writing(folder: Path) -> set[str]:
    """The temp names of the writes of ``last.ckpt`` under way in ``folder``."""
    names = os.listdir(folder) if folder.is_dir() else []
    return {n for n in names if is_temp(n) and "last.ckpt" in n and not n.startswith(SET_ASIDE_PREFIX)}


def _load(path: Path) -> dict:
    """A checkpoint file, or a distributed checkpoint folder (FSDP2) read as one."""
    if not path.is_dir():
        return torch.load(path, map_location="cpu", weights_only=False)
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    fd, tmp = tempfile.mkstemp()
    os.close(fd)
    try:
        dcp_to_torch_save(path, tmp)
        tensors = torch.load(tmp, map_location="cpu", weights_only=False)
    finally:
        os.unlink(tmp)
    ckpt = torch.load(path / "meta.pt", map_location="cpu", weights_only=False)
    ckpt["state_dict"] = tensors.pop("state_dict")
    ckpt["optimizer_states"] = [tensors[k] for k in sorted(tensors) if k.startswith("optimizer_")]
    return ckpt


def _weights(path: Path) -> tuple[int, dict]:
    """(global step, every weight and optimizer-state tensor by name) of a checkpoint."""
    ckpt = _load(path)
    state = dict(ckpt["state_dict"])
    for i, opt in enumerate(ckpt["optimizer_states"]):
        for p, tensors in opt["state"].items():
            state.update({f"optimizer{i}/{p}/{k}": v for k, v in tensors.items()})
    return ckpt["global_step"], state


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main(folder: str, kills: int, seed: int, max_delay_ms: float, extra: list[str]) -> dict:
    rng = random.Random(seed)
    max_delay = max_delay_ms / 1000
    root = Path(folder)
    tmpdir = Path(tempfile.mkdtemp(prefix="loki-kill-", dir="/dev/shm"))
    os.environ["TMPDIR"] = str(tmpdir)
    tempfile.tempdir = None
    t0 = time.perf_counter()

    ref_yaml = write_run(root / "straight", max_steps=MAX_STEPS, every=1)
    pid = _child(["fit", "--config", str(ref_yaml), *extra])
    assert os.waitpid(pid, 0)[1] == 0, "the uninterrupted run failed"
    reference = root / "straight" / "run" / "checkpoints"

    yaml = write_run(root / "killed", max_steps=MAX_STEPS, every=1)
    yaml.write_text(yaml.read_text().replace("save_top_k: -1", "save_top_k: 0"))
    ckdir = root / "killed" / "run" / "checkpoints"
    last = ckdir / "last.ckpt"
    done, mid_write, between, trials, steps = 0, 0, 0, 0, []
    # room for a faster machine, where more kills land after a short write has finished
    while mid_write < kills and trials < 6 * kills:
        trials += 1
        # --ckpt_path last, as a requeued job resumes: the newest checkpoint, or a new run
        pid = _child(["fit", "--config", str(yaml), "--ckpt_path", "last", *extra])
        # a write starts when its temp name appears: a staged folder has the same name at every
        # save, and temp names a previous kill left (the child removes them at start) are not
        # writes until they reappear; the old folder set aside during a move is no new write
        before = _writing(ckdir)
        nth, writes, killed = rng.randint(1, 2), 0, False
        while not killed:
            if os.waitpid(pid, os.WNOHANG)[0]:  # finished before the n-th write
                pid = 0
                break
            now = _writing(ckdir)
            writes += len(now - before)
            before = now
            if writes >= nth:
                # a random instant inside the write: a small checkpoint on a quiet machine is
                # written in a few ms, so a longer delay would mostly land after the rename
                time.sleep(rng.uniform(0, max_delay))
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                killed = True
                mid_write += any(is_temp(n) for n in os.listdir(ckdir))
            else:
                time.sleep(0.0005)
        if not killed:
            break
        done += 1
        state = "present" if last.exists() else "absent"
        if not last.exists() and finish_interrupted_swaps(ckdir):  # what the next start does
            between += 1
            state = "put back in place"
        print(f"kill {done}: write {nth} of this start, last.ckpt {state}", file=sys.stderr)
        if last.exists():  # every kill leaves a complete checkpoint equal to the reference
            step, weights = _weights(last)
            ref_step, ref_weights = _weights(reference / f"step={step}.ckpt")
            assert ref_step == step and _same(weights, ref_weights), f"last.ckpt at {step} differs"
            steps.append(step)
    pid = _child(["fit", "--config", str(yaml), "--ckpt_path", "last", *extra])
    assert os.waitpid(pid, 0)[1] == 0, "the final resume failed"
    step, weights = _weights(last)
    ref_step, ref_weights = _weights(reference / f"step={MAX_STEPS}.ckpt")
    assert step == ref_step == MAX_STEPS and _same(weights, ref_weights), "resumed run differs"
    left = [n for n in os.listdir(ckdir) if is_temp(n)]
    assert not left, f"temp files left after a clean run: {left}"
    for p in tmpdir.iterdir():
        p.unlink()
    tmpdir.rmdir()
    return {"kills": done, "mid_write": mid_write, "between_renames": between,
            "steps_at_kills": steps,
            "seconds": round(time.perf_counter() - t0, 1)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]),
                          sys.argv[5:])))

"""Kill ``loki fit`` during checkpoint writes, resume, and compare with an uninterrupted run.

    python -m tests.helpers.kill_fit FOLDER KILLS SEED [EXTRA LOKI FIT ARGS...]

Imports torch, Lightning and ``loki.cli`` once, then forks one child per ``loki fit`` (the
same ``loki.cli.main`` the command runs), so 20+ kills cost a fork each rather than a Python
start-up each. ``TMPDIR`` points at a folder under ``/dev/shm`` (tmpfs, another filesystem than
the run folder), as on most clusters.

1. An uninterrupted run saves a checkpoint at every step (the reference weights).
2. Kill loop: a child resumes from ``last.ckpt`` (if any) and writes ``last.ckpt`` at every step;
   the parent watches the checkpoint folder for the temp file of a write, waits a random
   0-1 ms into the n-th write (n random in 1..2) and sends SIGKILL. A kill counts as mid-write
   when the temp file is still there afterwards. After every kill ``last.ckpt`` must load and
   equal the reference at its step, bit for bit: weights and optimizer state.
3. A last child resumes to the end; its weights must equal the uninterrupted run's.

Prints one JSON line: kills, mid-write kills, steps, seconds.
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


def _weights(path: Path) -> tuple[int, dict]:
    """(global step, every weight and optimizer-state tensor by name) of a checkpoint."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = dict(ckpt["state_dict"])
    for i, opt in enumerate(ckpt["optimizer_states"]):
        for p, tensors in opt["state"].items():
            state.update({f"optimizer{i}/{p}/{k}": v for k, v in tensors.items()})
    return ckpt["global_step"], state


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main(folder: str, kills: int, seed: int, extra: list[str]) -> dict:
    rng = random.Random(seed)
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
    done, mid_write, trials, steps = 0, 0, 0, []
    while mid_write < kills and trials < 3 * kills:
        trials += 1
        resume = ["--ckpt_path", str(last)] if last.exists() else []
        # temp files a previous kill left (the child removes them at start) are not writes
        stale = set(os.listdir(ckdir)) if ckdir.is_dir() else set()
        pid = _child(["fit", "--config", str(yaml), *resume, *extra])
        nth, seen, killed = rng.randint(1, 2), set(), False
        while not killed:
            if os.waitpid(pid, os.WNOHANG)[0]:  # finished before the n-th write
                pid = 0
                break
            names = set(os.listdir(ckdir)) if ckdir.is_dir() else set()
            new = {n for n in names if n.startswith(".loki-tmp-last.ckpt")} - seen - stale
            if new:
                seen |= new
                if len(seen) >= nth:
                    # a random instant inside the write: a small checkpoint on a quiet machine is
                    # written in a few ms, so a longer delay would mostly land after the rename
                    time.sleep(rng.uniform(0, 0.001))
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    killed = True
                    mid_write += any(is_temp(n) for n in set(os.listdir(ckdir)) - stale)
            else:
                time.sleep(0.0005)
        if not killed:
            break
        done += 1
        print(f"kill {done}: write {nth} of this start, last.ckpt "
              f"{'present' if last.exists() else 'absent'}", file=sys.stderr)
        if last.exists():  # every kill leaves a complete checkpoint equal to the reference
            step, weights = _weights(last)
            ref_step, ref_weights = _weights(reference / f"step={step}.ckpt")
            assert ref_step == step and _same(weights, ref_weights), f"last.ckpt at {step} differs"
            steps.append(step)
    pid = _child(["fit", "--config", str(yaml), "--ckpt_path", str(last), *extra])
    assert os.waitpid(pid, 0)[1] == 0, "the final resume failed"
    step, weights = _weights(last)
    ref_step, ref_weights = _weights(reference / f"step={MAX_STEPS}.ckpt")
    assert step == ref_step == MAX_STEPS and _same(weights, ref_weights), "resumed run differs"
    left = [n for n in os.listdir(ckdir) if is_temp(n)]
    assert not left, f"temp files left after a clean run: {left}"
    for p in tmpdir.iterdir():
        p.unlink()
    tmpdir.rmdir()
    return {"kills": done, "mid_write": mid_write, "steps_at_kills": steps,
            "seconds": round(time.perf_counter() - t0, 1)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])))

"""What ``LossSpikeRollback`` leaves on disk: valid JSON events after a NaN loss, no stale temp
files from killed writes, checkpoints written whole."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from loki.cli import main
from tests.helpers.fit_run import write_run


def test_nan_spike_event_is_json_and_stale_temps_go(tmp_path: Path):
    rollback = tmp_path / "run" / "rollback"
    callbacks = f"""\
    - class_path: callbacks.fault_injection.InjectLossSpike
      init_args: {{at_steps: [6], factor: .nan, mode: loss}}
    - class_path: callbacks.spike_rollback.LossSpikeRollback
      init_args: {{snapshot_every_n_steps: 2, checkpoint_every_n_steps: 4, warmup_steps: 2,
                   dirpath: "{rollback}"}}
"""
    yaml = write_run(tmp_path, max_steps=9, every=3, extra_callbacks=callbacks)
    rollback.mkdir(parents=True)
    stale = [rollback / "rollback-step=00000004-r0.ckpt.tmp",  # killed before its rename
             rollback / ".loki-tmp-rollback-step=00000008-r0.ckpt.tmp.x1.part"]  # mid-write
    for p in stale:
        p.write_bytes(b"partial")
    main(["fit", "--config", str(yaml)])
    assert not any(p.exists() for p in stale)
    lines = (rollback / "rollback-events.jsonl").read_text().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0], parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert event["loss"] is None and event["spike_step"] == 6
    for ckpt in rollback.glob("rollback-*.ckpt"):
        assert torch.load(ckpt, weights_only=False)["global_step"] > 0
    assert not [p for p in rollback.iterdir() if p.name.endswith((".tmp", ".part"))]

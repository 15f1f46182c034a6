"""``loki demo``'s console: one line per stage within the line budget; libraries' logs and
warnings go to ``<run_dir>/demo.log`` unless ``--verbose``."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings

import lightning as L
import pytest

from loki import demo
from loki.module import LokiLM
from tests.helpers.synthetic import SyntheticSteps

# What ``make demo`` may print beside its progress bars (the budget).
LINE_BUDGET = 60
LIBRARY_NOISE = ("Warning", "WARNING", "INFO", "datatrove", "GPU available", "from C")


def _noisy_stage(cfg: demo.DemoConfig) -> dict:
    """What the real stages provoke, in every channel a library uses."""
    from loguru import logger  # datatrove re-adds a sys.stderr sink for every task

    logger.remove()
    logger.add(sys.stderr, level="INFO")
    logger.info("datatrove pipeline banner")
    warnings.warn("a library UserWarning", UserWarning, stacklevel=1)
    logging.getLogger("tests.library").warning("a library WARNING through logging")
    print("a library print to stdout")
    os.write(2, b"a message written from C to fd 2\n")
    # a real Lightning fit: its banners, its warnings, and the console progress bar
    from callbacks.console_progress import ConsoleProgressBar

    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, limit_val_batches=0,
                        enable_checkpointing=False, callbacks=[ConsoleProgressBar()],
                        default_root_dir=cfg.run_dir)
    trainer.fit(LokiLM("tiny", vocab_size=64), datamodule=SyntheticSteps(n_steps=2, vocab=64))
    return {"line": "2 steps", "steps": trainer.global_step}


@pytest.fixture
def tiny_demo(tmp_path, monkeypatch):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()
    docs = [{"id": f"doc-{i}", "text": " ".join(
        f"Document {i} sentence {k} tells of {words[(i + k) % 12]} token{i}q{k} near the "
        f"{words[(i * k) % 12]} and the token{i}r{k} {words[(i + 2 * k) % 12]} forever."
        for k in range(9))} for i in range(300)]
    (raw / "demo.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    monkeypatch.setitem(demo.STAGES, "noisy", _noisy_stage)
    library = logging.getLogger("tests.library")
    monkeypatch.setattr(library, "handlers", [])
    monkeypatch.setattr(library, "propagate", False)
    return ["--root", str(tmp_path / "data"), "--run_dir", str(tmp_path / "run"),
            "--stages", "[tasks,noisy,report]"]


def _library_logger() -> None:
    """A library logger as Lightning makes its own at import: a handler bound to the stderr of
    the moment, no propagation."""
    logging.getLogger("tests.library").handlers = [logging.StreamHandler(sys.stderr)]


def test_console_stays_within_budget_and_libraries_go_to_the_log(tiny_demo, tmp_path, capfd):
    _library_logger()
    demo.main(tiny_demo)
    out, err = capfd.readouterr()
    console = (out + err).replace("\r", "\n")
    lines = [line for line in out.splitlines() + err.splitlines() if line.strip()]
    # progress-bar redraws are not lines; what is left is the demo's own
    own = [line.rsplit("\r", 1)[-1] for line in lines if "it/s" not in line.rsplit("\r", 1)[-1]]
    assert len(own) <= LINE_BUDGET
    assert own[1].startswith("precision: ")  # bf16 or fp32, and why
    assert [line.split("]")[0] for line in own[2:5]] == ["[1/3", "[2/3", "[3/3"]
    assert "2 steps" in own[3] and own[-1].startswith("time per stage:")
    assert not [word for word in LIBRARY_NOISE if word in console], console
    assert "Epoch 0" in console  # the Lightning bar was drawn on the console
    log = (tmp_path / "run" / "demo.log").read_text()
    for expected in ("datatrove pipeline banner", "a library UserWarning",
                     "a library WARNING through logging", "a library print to stdout",
                     "a message written from C to fd 2"):
        assert expected in log

    # a second run skips the finished stages, still one line each
    demo.main(tiny_demo)
    again = capfd.readouterr().out.splitlines()
    assert sum(line.endswith("skipped") for line in again) == 3 and len(again) == 6


def test_verbose_keeps_library_output_on_the_console(tiny_demo, tmp_path, capfd):
    _library_logger()
    demo.main([*tiny_demo, "--verbose", "true", "--stages", "[noisy]"])
    out, err = capfd.readouterr()
    # (warnings themselves are pytest's to record here)
    assert "a library WARNING through logging" in err and "a message written from C" in err
    assert "a library print to stdout" in out
    assert not (tmp_path / "run" / "demo.log").exists()


def test_a_redone_stage_takes_the_later_stages_along(tmp_path, monkeypatch, capfd):
    """``--redo [b]`` runs b and every stage after it again (c reads what b writes), and the
    stages before it stay skipped."""
    runs: list[str] = []

    def stage(name: str):
        def run(cfg: demo.DemoConfig) -> dict:
            runs.append(name)
            return {"line": f"{name} ran"}
        return run

    for name in ("a", "b", "c"):
        monkeypatch.setitem(demo.STAGES, name, stage(name))
    args = ["--run_dir", str(tmp_path / "run"), "--stages", "[a,b,c]"]
    demo.main(args)
    assert runs == ["a", "b", "c"]
    runs.clear()
    demo.main([*args, "--redo", "[b]"])
    assert runs == ["b", "c"]
    out = capfd.readouterr().out
    assert "--redo from b on: c also run again" in out
    runs.clear()
    demo.main([*args, "--redo", "[c]"])
    assert runs == ["c"] and "also run again" not in capfd.readouterr().out
    assert demo.stages_after_redo(["a", "b", "c"], ["c", "a"]) == ["b"]


def test_ctrl_c_in_the_fit_stage_ends_the_demo_in_one_line_and_keeps_the_stages_done(
        tmp_path, monkeypatch, capfd):
    """Lightning ends a fit interrupted by Ctrl-C with its own ``sys.exit(1)``; the demo says
    that it was interrupted (exit 130), and the rerun skips the stages finished before."""
    from loki.cli import main
    from loki.resume import ResumeHint

    class CtrlC(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            raise KeyboardInterrupt

    def fit(cfg: demo.DemoConfig) -> dict:
        trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, limit_val_batches=0,
                            enable_checkpointing=False, enable_progress_bar=False,
                            callbacks=[CtrlC(), ResumeHint(["fit"])],
                            default_root_dir=cfg.run_dir)
        trainer.fit(LokiLM("tiny", vocab_size=64), datamodule=SyntheticSteps(n_steps=2, vocab=64))
        return {"line": "trained"}

    monkeypatch.setitem(demo.STAGES, "a", lambda cfg: {"line": "a ran"})
    monkeypatch.setitem(demo.STAGES, "fit", fit)
    monkeypatch.setattr("loki.resume._interrupted", False)
    args = ["demo", "--run_dir", str(tmp_path / "run"), "--stages", "[a,fit]"]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 130
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1] == "loki demo: interrupted; the same command picks up where it stopped", err
    monkeypatch.setitem(demo.STAGES, "fit", lambda cfg: {"line": "trained"})
    main(args)
    assert "done earlier" in capfd.readouterr().out


def test_command_line_mistakes_are_refused_before_the_console_or_the_disk(tmp_path, capfd):
    from loki.cli import main

    for args, says in [
        (["--redo", "[fitt]"], "unknown demo stage(s) fitt; known: corpus,"),
        (["--stages", "[report]"], f"run folder {tmp_path / 'dmeo'} not found: the stages "
                                   "report read the demo run")]:
        with pytest.raises(SystemExit) as info:
            main(["demo", "--run_dir", str(tmp_path / "dmeo"), *args])
        assert info.value.code == 2
        captured = capfd.readouterr()
        assert captured.out == "" and says in captured.err, captured
    assert list(tmp_path.iterdir()) == []


def test_bare_verbose_is_accepted_as_by_the_other_quiet_commands(tmp_path, monkeypatch):
    from loki.cli import main

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda cfg: seen.append(cfg.verbose))
    main(["demo", "--run_dir", str(tmp_path / "run"), "--verbose"])
    main(["demo", "--run_dir", str(tmp_path / "run"), "--verbose=false"])
    assert seen == [True, False]


def test_the_console_bar_leaves_the_loggers_version_out():
    from callbacks.console_progress import ConsoleProgressBar

    class Logged(L.LightningModule):
        pass

    trainer = L.Trainer(logger=True, accelerator="cpu", enable_checkpointing=False,
                        default_root_dir="/nonexistent", callbacks=[ConsoleProgressBar()])
    bar = trainer.progress_bar_callback
    assert "v_num" not in bar.get_metrics(trainer, Logged())

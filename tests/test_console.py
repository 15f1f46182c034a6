"""The quiet console of ``loki filter``, ``loki fit`` and ``loki distill`` run on their own."""

from __future__ import annotations

import os

import pytest

from loki import cli
from loki.console import say
from loki.errors import LokiError


def _noisy_filter(argv: list[str]) -> None:
    print("a library print", flush=True)
    os.write(2, b"a C-level message\n")
    say(f"filter summary {argv}")
    if "--fail" in argv:
        raise LokiError("the config names no input")


@pytest.fixture
def noisy(monkeypatch, tmp_path):
    import loki.filtering.cli

    monkeypatch.setattr(loki.filtering.cli, "main", _noisy_filter)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOKI_LOG_DIR")  # the default place, runs/logs
    return tmp_path / "runs" / "logs" / "filter.log"


def test_own_lines_on_the_terminal_libraries_in_the_log(noisy, capfd):
    cli.main(["filter", "--config", "x.yaml"])
    out, err = capfd.readouterr()
    assert out.splitlines() == ["filter summary ['--config', 'x.yaml']",
                                "library logs and warnings: runs/logs/filter.log "
                                "(--verbose shows them here)"]
    assert err == ""
    log = noisy.read_text()
    assert "a library print" in log and "a C-level message" in log


def test_error_reaches_the_terminal_and_verbose_keeps_everything(noisy, capfd):
    with pytest.raises(SystemExit) as exc:
        cli.main(["filter", "--fail"])
    assert exc.value.code == 2
    out, err = capfd.readouterr()
    assert "loki filter: error: the config names no input" in err
    assert "a C-level message" not in out + err
    cli.main(["filter", "--verbose", "--config", "x.yaml"])
    out, err = capfd.readouterr()
    assert "a library print" in out and "a C-level message" in err
    assert "'--verbose'" not in out  # the flag is the console's, not the command's


@pytest.mark.parametrize("flag", ["--help", "-h", "--print_config", "--print_config=skip_null"])
def test_help_and_print_config_reach_the_terminal(noisy, capfd, flag):
    cli.main(["filter", "--config", "x.yaml", flag])
    out, _ = capfd.readouterr()
    assert "a library print" in out  # the printed answer, not swallowed by the log
    assert "library logs and warnings" not in out and not noisy.exists()


def test_real_help_texts_are_printed(capfd, monkeypatch, tmp_path):
    from loki.distill import cli as distill_cli

    monkeypatch.chdir(tmp_path)

    with pytest.raises(SystemExit) as exc:
        cli.main(["distill", "build", "--help"])
    assert exc.value.code == 0
    out, _ = capfd.readouterr()
    assert "--prompts.num_prompts" in out and "--decontam.max_tries" in out
    cli.main(["distill", "--help"])
    assert capfd.readouterr().out.strip() == distill_cli.help_text() + "\n" + cli.VERBOSE_HELP


def test_the_subcommands_results_reach_the_terminal(monkeypatch, capfd, tmp_path):
    """``loki filter train-quality`` / ``report`` and ``loki distill`` print their result on the
    terminal, not into the log with the libraries' output."""
    from types import SimpleNamespace

    import loki.filtering.cli
    import loki.filtering.pipeline
    import loki.filtering.quality
    from loki.distill import cli as distill_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOKI_LOG_DIR")  # the default place, runs/logs
    monkeypatch.setattr(loki.filtering.cli, "parse", lambda *a: SimpleNamespace(
        output="quality.npz", output_dir="filtered"))
    monkeypatch.setattr(loki.filtering.quality, "train_quality",
                        lambda cfg: SimpleNamespace(kind="binary", embedder="hashing", metrics={
                            "n_train": 8, "n_test": 2, "heldout_accuracy": 0.5}))
    monkeypatch.setattr(loki.filtering.pipeline, "FilterPipeline",
                        lambda cfg: SimpleNamespace(report=lambda: {
                            "path": "filtered/filter_report.md"}))
    cli.main(["filter", "train-quality"])
    cli.main(["filter", "report"])
    cli.main(["distill"])
    out = capfd.readouterr().out
    assert ("quality head: quality.npz (binary, hashing embeddings; held-out accuracy 0.500 on "
            "2 texts; the head is then fit on all 10)") in out
    assert "report: filtered/filter_report.md" in out
    assert distill_cli.help_text() in out
    log = (tmp_path / "runs" / "logs" / "filter.log").read_text()
    assert "quality.npz" not in log and "filter_report.md" not in log


def test_a_bare_value_for_a_list_option_says_how_to_write_a_list(capfd, tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli.main(["tokenize", "--inputs", "docs", "--output", str(tmp_path / "shards")])
    assert exc.value.code == 2
    err = capfd.readouterr().err
    assert err.strip().endswith("a list goes in brackets: --inputs '[docs]'"), err
    assert not (tmp_path / "shards").exists()


@pytest.mark.parametrize(("args", "shown"), [
    (["--verbose"], True), (["--verbose", "true"], True), (["--verbose=yes"], True),
    (["--verbose", "false"], False), (["--verbose=0"], False), ([], False)])
def test_verbose_takes_the_forms_other_boolean_options_take(noisy, capfd, args, shown):
    cli.main(["filter", *args, "--config", "x.yaml"])
    out, _ = capfd.readouterr()
    assert ("a library print" in out) is shown
    assert "filter summary ['--config', 'x.yaml']" in out  # the flag and its value taken out


def test_a_bad_verbose_value_is_a_one_line_error(noisy, capfd):
    with pytest.raises(SystemExit) as exc:
        cli.main(["filter", "--verbose=maybe"])
    assert exc.value.code == 2
    assert capfd.readouterr().err.strip() == "loki filter: error: --verbose takes true or false, got 'maybe'"


def test_help_of_a_quiet_command_names_verbose(noisy, capfd):
    cli.main(["filter", "--help"])
    assert capfd.readouterr().out.rstrip().endswith(cli.VERBOSE_HELP.strip())


def test_a_stage_of_a_verbose_demo_keeps_the_terminal(tmp_path, capfd):
    """``loki demo --verbose true`` runs its stages muted, outside a quiet console: a command
    the stage runs keeps the demo's choice instead of opening a log of its own."""
    from loki.console import muted, quiet_console

    with muted(), quiet_console(tmp_path / "inner.log"):
        os.write(2, b"a C-level message\n")
    assert "a C-level message" in capfd.readouterr().err
    assert not (tmp_path / "inner.log").exists()


def test_rank_zero_from_lightning_or_else_the_launcher(monkeypatch):
    """The closing log line is said once per distributed run: by the process Lightning calls
    rank 0, or (before Lightning is loaded) the one torchrun or SLURM calls rank 0."""
    import sys
    from types import SimpleNamespace

    from loki.console import is_rank_zero

    name = "lightning.fabric.utilities.rank_zero"
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setitem(sys.modules, name, SimpleNamespace(rank_zero_only=SimpleNamespace(rank=1)))
    monkeypatch.setenv("RANK", "0")
    assert not is_rank_zero()  # Lightning's rank (e.g. set by a spawning strategy) decides
    monkeypatch.setitem(sys.modules, name, SimpleNamespace(rank_zero_only=SimpleNamespace(rank=0)))
    assert is_rank_zero()
    monkeypatch.delitem(sys.modules, name)
    monkeypatch.setenv("RANK", "3")
    assert not is_rank_zero()
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert is_rank_zero()
    monkeypatch.delenv("SLURM_PROCID")
    assert is_rank_zero()  # not distributed


def test_loki_log_dir_moves_the_library_logs(noisy, capfd, monkeypatch, tmp_path):
    monkeypatch.setenv("LOKI_LOG_DIR", str(tmp_path / "job-42"))
    cli.main(["filter", "--config", "x.yaml"])
    out, _ = capfd.readouterr()
    assert out.splitlines()[-1] == (f"library logs and warnings: {tmp_path}/job-42/filter.log "
                                    "(--verbose shows them here)")
    assert "a C-level message" in (tmp_path / "job-42" / "filter.log").read_text()
    assert not noisy.exists()


def test_each_rank_of_a_distributed_run_has_its_own_log(noisy, capfd, monkeypatch, tmp_path):
    """Rank 0 keeps runs/logs/<command>.log; the others write <command>.rank<N>.log beside it,
    and rank 0's closing line names them when this run wrote any."""
    import os
    import time

    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    import loki.console

    monkeypatch.setattr(loki.console, "process_rank", lambda: 3)
    cli.main(["filter", "--config", "x.yaml"])
    assert "a C-level message" in (tmp_path / "runs" / "logs" / "filter.rank3.log").read_text()
    assert "library logs and warnings" not in capfd.readouterr().out  # rank 0 says where
    monkeypatch.setattr(loki.console, "process_rank", lambda: 0)
    import loki.filtering.cli

    def with_a_second_rank(argv):  # rank 3 of the same run writes its log meanwhile
        (tmp_path / "runs" / "logs" / "filter.rank3.log").touch()
        _noisy_filter(argv)

    monkeypatch.setattr(loki.filtering.cli, "main", with_a_second_rank)
    cli.main(["filter", "--config", "x.yaml"])
    assert capfd.readouterr().out.splitlines()[-1] == (
        "library logs and warnings: runs/logs/filter.log; other ranks: "
        "runs/logs/filter.rank<N>.log (--verbose shows them here)")
    old = time.time() - 3600  # a rank log of an earlier run is not named
    os.utime(tmp_path / "runs" / "logs" / "filter.rank3.log", (old, old))
    monkeypatch.setattr(loki.filtering.cli, "main", _noisy_filter)
    cli.main(["filter", "--config", "x.yaml"])
    assert capfd.readouterr().out.splitlines()[-1] == (
        "library logs and warnings: runs/logs/filter.log (--verbose shows them here)")

"""``loki tokenize``'s staging folder: a run killed or stopped in the middle of its swap loses no
earlier set, and the next run into the same output recovers what it left."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from loki.cli import main as loki
from loki.data import tokenize_staging
from loki.data.tokenize import tokenize_files
from loki.errors import LokiError

ROOT = Path(__file__).resolve().parents[2]

# Runs tokenize_files(<inputs>, <output>) and kills itself with SIGKILL right after the earlier
# set of source <argv[3]> has been moved aside, before the new one takes its place.
KILLED_MID_SWAP = """
import os, signal, sys
from pathlib import Path
from loki.data import tokenize_staging
from loki.data.tokenize import tokenize_files

def replace(src, dst, replace=os.replace):
    replace(src, dst)
    if Path(dst).parent.name == "old" and Path(dst).name == sys.argv[3]:
        os.kill(os.getpid(), signal.SIGKILL)

tokenize_staging.os.replace = replace
tokenize_files([Path(sys.argv[1])], sys.argv[2], log=lambda m: None)
"""


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/logs/tokenize.log goes here


def _inputs(path: Path, version: str) -> Path:
    path.write_text("".join(json.dumps({"text": f"{version} document of {source}",
                                        "metadata": {"source": source}}) + "\n"
                            for source in ("web", "wiki")))
    return path


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_a_run_killed_in_the_middle_of_the_swap_is_recovered_by_the_next(tmp_path, capfd):
    out = tmp_path / "shards"
    tokenize_files([_inputs(tmp_path / "v1.jsonl", "first")], out, log=lambda m: None)
    earlier_wiki = _bytes(out / "wiki")
    new = _inputs(tmp_path / "v2.jsonl", "second")
    killed = subprocess.Popen([sys.executable, "-c", KILLED_MID_SWAP, str(new), str(out), "wiki"],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE)
    assert killed.wait() == -signal.SIGKILL, killed.stderr.read().decode()
    [staging] = out.glob(".tokenize-*")  # web was swapped, wiki only moved aside
    assert not (out / "wiki").exists() and _bytes(staging / "old" / "wiki") == earlier_wiki
    capfd.readouterr()

    bad = tmp_path / "bad.jsonl"  # the next run fails on its input, after the recovery
    bad.write_text('{"text": "fine"}\n["not an object"]\n')
    with pytest.raises(SystemExit):
        loki(["tokenize", "--inputs", f"[{bad}]", "--output", str(out)])
    stdout, err = capfd.readouterr()
    assert stdout.splitlines()[0] == (
        f"loki tokenize: found {staging}, left by a run that was stopped (pid {killed.pid}); put "
        f"its earlier wiki shards back into {out / 'wiki'} and removed it")
    assert err.strip().endswith("bad.jsonl:2: expected an object with a 'text' string, not an "
                                "array")
    assert _bytes(out / "wiki") == earlier_wiki
    assert sorted(p.name for p in out.iterdir()) == ["web", "wiki"]


def test_a_stop_in_the_middle_of_the_swap_puts_the_earlier_set_back(tmp_path, monkeypatch):
    out = tmp_path / "shards"
    tokenize_files([_inputs(tmp_path / "v1.jsonl", "first")], out, log=lambda m: None)
    before = _bytes(out)

    def replace(src, dst, replace=os.replace):
        replace(src, dst)
        if Path(dst).parent.name == "old" and Path(dst).name == "web":
            raise KeyboardInterrupt  # Ctrl-C between the two renames

    monkeypatch.setattr(tokenize_staging.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        tokenize_files([_inputs(tmp_path / "v2.jsonl", "second")], out, log=lambda m: None)
    assert _bytes(out) == before and not list(out.glob(".tokenize-*"))


def test_a_stale_staging_folder_is_removed_with_one_line(tmp_path):
    out = tmp_path / "shards"
    tokenize_files([_inputs(tmp_path / "v1.jsonl", "first")], out, log=lambda m: None)
    stale = out / ".tokenize-abcd1234"
    (stale / "parts" / "00000").mkdir(parents=True)
    pid = _dead_pid()
    (stale / "owner.json").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    lines = []
    tokenize_files([_inputs(tmp_path / "v2.jsonl", "second")], out, log=lines.append)
    assert lines[0] == (f"loki tokenize: found {stale}, left by a run that was stopped "
                        f"(pid {pid}), and removed it")
    assert sorted(p.name for p in out.iterdir()) == ["web", "wiki"]


def test_a_staging_folder_whose_pid_now_names_another_process_is_removed(tmp_path):
    """The pid in owner.json was handed to a new process after the run that made the folder was
    killed: its start time tells the two apart, so the folder is not taken for a run still going."""
    from loki.data.tokenize_staging import process_start

    if process_start(os.getpid()) is None:
        pytest.skip("no /proc to read a process's start time from")
    out = tmp_path / "shards"
    tokenize_files([_inputs(tmp_path / "v1.jsonl", "first")], out, log=lambda m: None)
    reused = out / ".tokenize-reused"
    reused.mkdir()
    boot, ticks = process_start(os.getpid()).split("/")
    (reused / "owner.json").write_text(json.dumps({  # this pid, started a tick earlier
        "pid": os.getpid(), "host": socket.gethostname(), "started": f"{boot}/{int(ticks) - 1}"}))
    lines = []
    tokenize_files([_inputs(tmp_path / "v2.jsonl", "second")], out, log=lines.append)
    assert lines[0] == (f"loki tokenize: found {reused}, left by a run that was stopped "
                        f"(pid {os.getpid()}), and removed it")
    assert not reused.exists()


@pytest.mark.parametrize("owner, why", [
    ("live", "belongs to a run still going (pid {pid})"),
    ("other host", "was made by a run on host elsewhere"),
    (None, "has no readable owner.json saying which run made it"),
    ("pid 0", "has no readable owner.json saying which run made it")])
def test_a_staging_folder_that_may_be_in_use_is_refused_untouched(tmp_path, capsys, owner, why):
    from loki.data.tokenize_staging import process_start

    out = tmp_path / "shards"
    tokenize_files([_inputs(tmp_path / "v1.jsonl", "first")], out, log=lambda m: None)
    staging = out / ".tokenize-inuse"
    (staging / "old" / "wiki").mkdir(parents=True)  # as if that run were swapping right now
    os.replace(out / "wiki", staging / "old" / "wiki")
    if owner:
        pid, host = {"live": (os.getpid(), socket.gethostname()),
                     "other host": (_dead_pid(), "elsewhere"),
                     "pid 0": (0, socket.gethostname())}[owner]
        started = process_start(pid) if owner == "live" else None  # as make_staging writes it
        (staging / "owner.json").write_text(json.dumps({"pid": pid, "host": host,
                                                        "started": started}))
    before = _bytes(out)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        loki(["tokenize", "--inputs", f"[{tmp_path / 'v1.jsonl'}]", "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert err == (f"loki tokenize: error: {staging} {why.format(pid=os.getpid())}; remove it if "
                   "no loki tokenize is using it, or choose another --output (nothing was "
                   "written)")
    assert _bytes(out) == before and not (out / "wiki").exists()



def test_the_corpus_cache_waits_for_another_process_writing_it(tmp_path):
    """Each node's first rank tokenizes a raw corpus into the shared cache at the same time:
    the one that finds the other's staging folder waits for its shards instead of failing."""
    import threading

    from loki.data.sources import tokenize_corpus

    files = [_inputs(tmp_path / "in.jsonl", "v1")]
    folder = tmp_path / "cache" / "corpus-x"
    other = folder / ".tokenize-othernode"
    other.mkdir(parents=True)
    (other / "owner.json").write_text(json.dumps({"pid": 1, "host": "node17"}))
    lines: list[str] = []

    def other_node_finishes() -> None:  # writes the shards, then its done marker
        tokenize_files(files, tmp_path / "elsewhere", log=lambda m: None)
        os.rename(tmp_path / "elsewhere" / "web", folder / "web")
        (folder / "done").write_text("ok\n")

    finish = threading.Timer(0.3, other_node_finishes)
    finish.start()
    tokenize_corpus(files, folder, "cl100k_base", lines.append, wait_s=30, poll_s=0.05)
    finish.join()
    assert lines == [f"the corpus cache {folder} is being written by another process; waiting "
                     "for it"]
    assert (folder / "done").exists() and other.exists()  # its staging was left to it
    # a process that never finishes: the wait ends in one line naming its folder
    stuck = tmp_path / "cache" / "corpus-y"
    stuck.mkdir()
    other.rename(stuck / other.name)
    with pytest.raises(LokiError, match=r"othernode was made by a run on host node17; .*waited "
                                        r"0 s for it to finish"):
        tokenize_corpus(files, stuck, "cl100k_base", lines.append, wait_s=0, poll_s=0.01)

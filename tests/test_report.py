"""loki report: tables in REPORT.md match report.json; missing stages say "not run"."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from loki.atomic import NoRoomError
from loki.errors import LokiError
from loki.report import build_report, main
from loki.report_render import cell
from loki.report_sections import NOT_RUN
from tests.helpers.full_disk import file_size_limit, snapshot

pytest.importorskip("matplotlib")


def _write_metrics(path: Path) -> None:
    """12 logged steps of a run with a rollback at step 6 (tokens go back) and distillation
    on every 4th step, laid out like Lightning's CSVLogger (sparse rows, 'step' column): a row
    holds what its step measured (train/loss on LM steps, distill values on the others)."""
    cols = ["step", "trainer/tokens_seen", "train/loss", "train/distill_loss",
            "train/micro_batches",
            "batch/sequences", "rollback/count", "rollback/spike_step", "rollback/target_step",
            "distill/win_rate/ground_truth", "distill/win_rate/smollm", "distill/loss/smollm",
            "distill/loss/ground_truth", "distill/samples", "val/loss", "val/ppl"]
    rows, tokens = [], 0
    for step in range(12):
        tokens = 640 * (step - 2) if step >= 7 else tokens + 64 * (1 + step // 4) * 4 // 4
        row = {"step": step, "trainer/tokens_seen": tokens, "train/loss": 5.0 - 0.1 * step,
               "train/micro_batches": 1 + step // 4, "batch/sequences": 4 * (1 + step // 4),
               "rollback/count": 1 if step >= 6 else 0}
        if step == 6:
            row.update({"rollback/spike_step": 6, "rollback/target_step": 4})
        if step % 4 == 3:
            del row["train/loss"]
            row.update({"train/distill_loss": 1.0, "distill/win_rate/ground_truth": 0.25, "distill/win_rate/smollm": 0.75,
                        "distill/loss/smollm": 1.5, "distill/loss/ground_truth": 2.5,
                        "distill/samples": 4 if step == 3 else 12})
        rows.append(row)
        if step % 5 == 4:
            rows.append({"step": step, "val/loss": 4.5, "val/ppl": 90.0})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def _fixtures(tmp_path: Path) -> tuple[Path, Path]:
    run, data = tmp_path / "runs" / "demo", tmp_path / "data"
    (data / "filtered").mkdir(parents=True)
    (data / "tokenizer").mkdir()
    (data / "filtered" / "filter_report.json").write_text(json.dumps({
        "output_dir": "x", "total_seconds": 3.0, "benchmark_hits_per_task": {"demo_tasks": 2},
        "stages": [
            {"stage": "clean", "seconds": 1.5, "docs_in": 100, "docs_out": 80,
             "bytes_in": 100000, "bytes_out": 70000, "reasons": {}, "removed_examples": []},
            {"stage": "dedup", "seconds": 1.5, "docs_in": 80, "docs_out": 60,
             "bytes_in": 70000, "bytes_out": 50000, "reasons": {}, "removed_examples": []},
            {"stage": "decontam", "seconds": None,
             "reasons": {"contaminated_docs": 3, "dropped_too_many_hits": 1, "hits_demo_tasks": 2},
             "counters": {"replaced_by_fragments": 2, "fragments_written": 5},
             "removed_examples": [{"id": "doc-7", "reason": "benchmark_match",
                                   "text": "the river runs past the mill"}]}]}))
    (data / "tokenizer" / "prune_report.json").write_text(json.dumps({
        "vocab_size": 16384, "vocab_hash": "abc", "base": "cl100k_base", "corpus_bytes": 50000,
        "corpus_docs": 60, "distinct_tokens_used": 9000, "kept_unused": 12,
        "filled_unranked": 0, "bytes_per_token_held_out": {"base": 4.2, "pruned": 4.0,
                                                           "ratio": 4.0 / 4.2}}))
    logs = run / "logs" / "csv" / "version_0"
    logs.mkdir(parents=True)
    _write_metrics(logs / "metrics.csv")
    (run / "rollback").mkdir()
    (run / "rollback" / "rollback-events.jsonl").write_text(json.dumps({
        "rollback": 1, "spike_step": 6, "spike_tokens": 1856, "loss": 9.5,
        "reason": "loss 9.5 > 6", "target_step": 4, "target_tokens": 1280,
        "target": "memory", "seed": 123, "skipped_samples": [1, 2, 3]}) + "\n")
    (run / "eval").mkdir()
    (run / "eval" / "results.json").write_text(json.dumps({"results": {
        "loki_demo_cloze": {"alias": "cloze", "acc,none": 0.5, "acc_stderr,none": 0.05,
                            "acc_norm,none": 0.55, "acc_norm_stderr,none": 0.04},
        "loki_demo_lastword": {"acc,none": 0.25, "acc_stderr,none": "N/A"}}}))
    (run / "compare").mkdir()
    (run / "compare" / "compare.json").write_text(json.dumps({"tasks": {
        "Demo minimal pairs": {"n": 200, "mean_a": 0.505, "mean_b": 0.78, "diff": 0.275,
                               "ci_low": 0.22, "ci_high": 0.33, "p_value": 0.0,
                               "confidence": 0.95}}}))
    (run / "probes").mkdir()
    (run / "probes" / "probes.json").write_text(json.dumps({
        "samples": [{"name": "fibonacci", "prompt": "The closed form | of F_n", "output": "is"},
                    {"name": "story", "prompt": "Once", "completion": "upon a\ntime"}],
        "summary": {"stereotype_consistent_share": 0.5, "items": 8}}))
    return run, data


def _md_tables(md: str) -> list[list[list[str]]]:
    """Every Markdown table in the page as rows of cells (header and separator dropped)."""
    tables, current = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("| "):
            cells = [c.strip().replace("\\|", "|")
                     for c in line.strip()[2:-2].split(" | ")]
            current.append(cells)
        elif current:
            tables.append(current[2:])
            current = []
    return tables


def _json_tables(report: dict) -> list[list[list]]:
    out = []
    for sec in report["sections"].values():
        for key in ("table", "hits", "contaminated", "summary"):
            if key in sec and sec[key]["rows"]:
                formats = [sec[key].get("formats", {}).get(c) for c in sec[key]["columns"]]
                out.append([list(zip(row, formats, strict=True)) for row in sec[key]["rows"]])
    return out


def test_tables_match_json_and_plots_exist(tmp_path: Path) -> None:
    run, data = _fixtures(tmp_path)
    report = build_report(run, data)
    md = (run / "REPORT.md").read_text()
    on_disk = json.loads((run / "report.json").read_text())
    assert all(s["status"] == "ok" for s in on_disk["sections"].values()), on_disk["sections"]
    md_tables, js_tables = _md_tables(md), _json_tables(on_disk)
    assert len(md_tables) == len(js_tables) == 11
    for md_rows, js_rows in zip(md_tables, js_tables, strict=True):
        assert len(md_rows) == len(js_rows)
        for md_row, js_row in zip(md_rows, js_rows, strict=True):
            assert len(md_row) == len(js_row)
            for text, (value, fmt) in zip(md_row, js_row, strict=True):
                assert text == cell(value, fmt).replace("\\|", "|")
    # numbers come from the artifacts, not from the builder
    sections = report["sections"]
    assert sections["filter"]["table"]["rows"][0][:3] == ["clean", 100, 80]
    assert sections["filter"]["table"]["rows"][2][1] is None  # decontam had no tally: no number
    gt, smollm = sections["distillation"]["table"]["rows"]
    # sample-weighted: (4 * 0.25 + 12 * 0.25 + ...) / total = 0.25 and 0.75
    assert gt[0] == "ground_truth" and gt[1] == pytest.approx(0.25)
    assert smollm[1] == pytest.approx(0.75) and smollm[3] == 3
    assert sections["rollbacks"]["table"]["rows"][0][:3] == [1, 6, 1856]
    training = dict(sections["training"]["table"]["rows"])
    assert training["LM steps logged (rows with train/loss)"] == 9
    assert training["distillation steps logged (rows with train/distill_loss)"] == 3
    evals = {(r[0], r[1]): r for r in sections["eval"]["table"]["rows"]}
    assert evals[("loki_demo_cloze", "acc_norm")][2:] == [0.55, 0.04, 0.25]  # chance beside it
    # percentages and seconds read as such; the decontamination row names its documents
    assert "| clean | 100 | 80 | 100000 | 70000 | 80.0% | 1.5 s | — |" in md
    assert "| smollm | 75.0% | 1.5 | 3 |" in md  # a win rate reads as a percentage
    assert "| loki_demo_cloze | acc_norm | 55.0% | 4.0% | 25.0% |" in md
    assert ("3 contaminated documents (1 shown below): 1 dropped, 2 cut around the matches "
            "into 5 fragments, each a document out") in md
    assert "| doc-7 | benchmark_match |" in md
    assert ("| Demo minimal pairs | 200 | 50.0% | 50.5% | 78.0% | +27.5 | [+22.0, +33.0] | "
            "0.000 |") in md
    assert evals[("loki_demo_lastword", "acc")][3] is None  # "N/A" stderr is not a number
    assert sections["probes"]["table"]["rows"][1] == ["story", "Once", "upon a\ntime"]
    for name in ("loss_vs_tokens", "batch_size_vs_tokens", "kd_win_rate",
                 "kept_per_filter_stage"):
        png = run / report["plots"][name]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png.name})" in md


def test_missing_artifacts_say_not_run(tmp_path: Path, capsys) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "nodata").mkdir()
    main(["--run_dir", str(tmp_path / "run"), "--data_root", str(tmp_path / "nodata")])
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    md = (tmp_path / "run" / "REPORT.md").read_text()
    for key, sec in report["sections"].items():
        assert sec["status"] == NOT_RUN, key
        assert sec["reason"] in md
    assert report["plots"] == {} and "|" not in md
    assert "not run: filter" in capsys.readouterr().out


def test_a_missing_run_folder_is_an_error_unless_out_is_given(tmp_path: Path) -> None:
    with pytest.raises(LokiError, match="run folder .*typo not found; give --run_dir"):
        main(["--run_dir", str(tmp_path / "typo"), "--data_root", str(tmp_path / "nodata")])
    assert list(tmp_path.iterdir()) == []  # nothing made
    main(["--run_dir", str(tmp_path / "typo"), "--out", str(tmp_path / "data-only" / "R.md")])
    assert (tmp_path / "data-only" / "R.md").is_file() and not (tmp_path / "typo").exists()


def test_paths_given_must_exist(tmp_path: Path) -> None:
    run, data = _fixtures(tmp_path)
    build_report(run, data)
    before = snapshot(run)
    for typo in (["--data_root", str(tmp_path / "dat")],
                 ["--metrics_csv", str(run / "logs" / "metrix.csv")],
                 ["--probes", str(run / "probes")]):  # a folder, not the JSON file
        with pytest.raises(LokiError, match="not found: --" + typo[0][2:]):
            main(["--run_dir", str(run), "--data_root", str(data), *typo])
    assert snapshot(run) == before  # the good report is left as it was


def test_a_metrics_csv_given_must_be_one(tmp_path: Path) -> None:
    run, data = _fixtures(tmp_path)
    (run / "config.yaml").write_text("model:\n  config: tiny\n")
    before = snapshot(tmp_path)
    with pytest.raises(LokiError, match=r"config.yaml is not a training metrics file .*no step"):
        main(["--run_dir", str(run), "--data_root", str(data),
              "--metrics_csv", str(run / "config.yaml")])
    assert snapshot(tmp_path) == before


def test_out_is_a_markdown_file_and_nothing_else(tmp_path: Path, capsys) -> None:
    run, data = _fixtures(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(LokiError, match=r"--out .*runs is a folder; .*--out .*runs/REPORT.md"):
        main(["--run_dir", str(run), "--data_root", str(data), "--out", str(run.parent)])
    with pytest.raises(LokiError, match=r"rep_dc is not a Markdown file name; .*rep_dc/REPORT.md"):
        main(["--run_dir", str(run), "--data_root", str(data), "--out", str(run / "rep_dc")])
    with pytest.raises(LokiError, match=r"r.txt is not a Markdown file name; .*--out .*r.md "):
        main(["--run_dir", str(run), "--data_root", str(data), "--out", str(run / "r.txt")])
    assert snapshot(tmp_path) == before  # refused before anything is written
    main(["--run_dir", str(run), "--data_root", str(data), "--out", str(tmp_path / "r" / "R.md")])
    written = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert written == sorted(["R.md", "report.json", "batch_size_vs_tokens.png", "kd_win_rate.png",
                              "kept_per_filter_stage.png", "loss_vs_tokens.png"])


def test_help_describes_every_option(capsys) -> None:
    from loki.report import ReportConfig

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ReportConfig.__dataclass_fields__:
        assert f"--{name}" in text
    assert "The Markdown file to write, a path ending in .md" in text
    assert "Probe samples shown in the report" in text


def test_metrics_without_distill_or_rollback(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,trainer/tokens_seen,train/loss\n0,64,5.0\n1,128,4.0\n")
    report = build_report(run, tmp_path / "run")  # a data folder without the data stages
    s = report["sections"]
    assert s["training"]["status"] == "ok"
    assert s["distillation"]["status"] == NOT_RUN and "did not run" in s["distillation"]["reason"]
    assert s["rollbacks"]["status"] == NOT_RUN
    assert set(report["plots"]) == {"loss_vs_tokens"}


def test_an_attached_rollback_without_a_spike_says_so(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,trainer/tokens_seen,train/loss,rollback/count\n"
                                     "0,64,5.0,0\n1,128,4.0,0\n2,192,3.9,0\n")
    build_report(run, tmp_path / "run")
    md = (run / "REPORT.md").read_text()
    section = md.split("## Loss-spike rollbacks")[1].split("##")[0]
    assert ("No rollback: LossSpikeRollback was attached (rollback/count in 3 logged rows) and "
            "found no loss spike.") in section


def test_rows_written_with_repeated_values_are_read_by_the_schedule(tmp_path: Path) -> None:
    """A metrics.csv from before each row held only its own step's values: every row after the
    first distillation step carries train/loss and the distill values, one of them repeated."""
    run = tmp_path / "run"
    run.mkdir()
    lines = ["step,trainer/tokens_seen,train/loss,train/distill_loss,distill/win_rate/gt"]
    lines += [f"{s},{64 * (s + 1)},{5.0 - 0.1 * s},1.5,0.5" for s in range(1, 12, 2)]
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    s = build_report(run)["sections"]
    training = dict(s["training"]["table"]["rows"])
    assert training["LM steps logged (rows with train/loss)"] == 6  # the schedule is unknown
    assert "include repeated values" in s["training"]["note"]
    (run / "distill_summary.json").write_text(json.dumps({"every_n_batches": 4,
                                                          "distill_steps": 3, "sources": {}}))
    report = build_report(run)
    s = report["sections"]
    training = dict(s["training"]["table"]["rows"])
    # logged steps 1, 3, 5, 7, 9, 11: 3, 7 and 11 distilled
    assert training["LM steps logged (rows with train/loss)"] == 3
    assert training["distillation steps logged (rows with train/distill_loss)"] == 3
    assert training["last train loss"] == pytest.approx(4.1)  # step 9's, not step 11's repeat
    assert s["distillation"]["table"]["rows"] == [["gt", 0.5, None, 3]]
    assert "6 rows of metrics.csv carry both" in s["distillation"]["note"]
    assert "3 distillation steps ran" in s["distillation"]["note"]
    assert s["training"]["note"] in (run / "REPORT.md").read_text()


def test_a_full_disk_leaves_the_earlier_report(tmp_path: Path) -> None:
    run, data = _fixtures(tmp_path)
    build_report(run, data)
    before = snapshot(run)
    (run / "probes" / "probes.json").unlink()  # the new report would differ
    with file_size_limit(16 << 10), pytest.raises(NoRoomError, match="left as they were"):
        build_report(run, data)  # a PNG does not fit
    after = snapshot(run)
    assert after == {k: v for k, v in before.items() if k != "probes/probes.json"}


def test_malformed_artifact_is_reported_not_raised(tmp_path: Path) -> None:
    run, data = _fixtures(tmp_path)
    (data / "filtered" / "filter_report.json").write_text(json.dumps({"stages": [{"x": 1}]}))
    (run / "eval" / "results.json").write_text("{not json")
    report = build_report(run, data)
    s = report["sections"]
    assert s["filter"]["status"] == NOT_RUN and "unexpected layout" in s["filter"]["reason"]
    assert s["eval"]["status"] == NOT_RUN and "cannot read" in s["eval"]["reason"]
    assert s["tokenizer"]["status"] == "ok" and "kept_per_filter_stage" not in report["plots"]


def test_reads_what_loki_eval_and_loki_probe_write(tmp_path: Path) -> None:
    """The layouts OneShotBenchmarkEval (results.json) and `loki probe` (probes.json) write."""
    run, data = _fixtures(tmp_path)
    (run / "eval" / "results.json").write_text(json.dumps({
        "rows": {"Demo cloze": {"task": "loki_demo_cloze", "metric": "acc_norm,none",
                                "num_fewshot": 0, "value": 0.3, "stderr": 0.03}},
        "average": 0.3, "average_without_truthfulqa": 0.3}))
    (run / "probes" / "probes.json").write_text(json.dumps({
        "prompts": {"history": {"prompt": "The French Revolution", "samples": [" began", " x"]}},
        "bias": {"stereotype_consistent_share": 0.75, "orderings": [
            {"occupations": ["lawyer", "secretary"], "pronouns": ["He", "She"],
             "prompt": "A lawyer ...", "resolved": "secretary", "stereotype_consistent": True}]}}))
    s = build_report(run, data)["sections"]
    assert s["eval"]["table"]["rows"] == [["Demo cloze", "acc_norm", 0.3, 0.03, 0.25]]
    assert s["eval"]["average"] == 0.3
    rows = s["probes"]["table"]["rows"]
    assert rows[0] == ["history", "The French Revolution", " began"]
    assert rows[1][0] == "bias: lawyer/secretary He/She" and "secretary" in rows[1][2]
    assert s["probes"]["summary"]["rows"] == [["bias: stereotype-consistent share", 0.75]]


"""Exact and MinHash near-duplicate removal (datatrove stages) on planted duplicates."""

from __future__ import annotations

from conftest import filter_config, prose, run_filter, stage_row, write_jsonl


def test_planted_exact_and_near_duplicates_are_removed(tmp_path, rng):
    originals = [prose(rng, 20) for _ in range(8)]
    rows = [{"id": f"o{i}", "text": t} for i, t in enumerate(originals)]
    rows.append({"id": "exact", "text": originals[0]})
    words = originals[1].split()
    words[5] = "different"  # one word changed: Jaccard of 5-gram shingles stays ~0.9
    rows.append({"id": "near", "text": " ".join(words)})
    write_jsonl(tmp_path / "raw" / "a.jsonl", rows)
    cfg = filter_config(tmp_path, [str(tmp_path / "raw")], dedup={"exact": True, "minhash": True})
    report, out = run_filter(cfg)
    ids = sorted(d["id"] for d in out)
    assert len(ids) == 8
    assert "exact" not in ids or "o0" not in ids
    assert "near" not in ids or "o1" not in ids
    assert {f"o{i}" for i in range(2, 8)} <= set(ids)
    assert stage_row(report, "exact_dedup")["docs_out"] == 9
    assert stage_row(report, "minhash_dedup")["docs_out"] == 8
    assert stage_row(report, "exact_dedup")["removed_examples"]
    # every removal has its reason, and each stage adds up
    assert stage_row(report, "exact_dedup")["reasons"] == {"dropped_exact_duplicate": 1}
    assert stage_row(report, "minhash_dedup")["reasons"] == {"dropped_near_duplicate": 1}
    assert all(stage_row(report, s)["adds_up"] for s in ("read", "exact_dedup", "minhash_dedup"))

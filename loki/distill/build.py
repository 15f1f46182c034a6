"""Build the candidate cache: prompts from the training shards, one continuation per teacher.

Prompts are windows of the token shards (``prompt_tokens`` student tokens; the first window of
each document is its prefix); the ground truth is the document's own next ``max_new_tokens``
tokens. The prompt set is fixed by ``prompts.seed`` and split across build tasks (task ``r`` of
``n`` takes prompts ``r, r + n, ...``), so a datatrove executor (local processes, Slurm, Ray:
the same ``executor`` block as ``loki filter``) runs millions of prompts with no new scheduler;
each task writes its own shard and completion marker, and a rerun skips finished tasks.

Every teacher continuation is re-tokenized with the student tokenizer (unless the teacher shares
it), checked against the benchmark n-gram index and regenerated with a new seed when it copies
benchmark text, up to ``decontam.max_tries`` generations, then dropped. Counts per source go to
the shard markers and the cache's ``report.json``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from loki.distill.build_config import BuildConfig, PromptConfig
from loki.distill.cache import finalize, shard_name, write_shard
from loki.distill.leaks import ContaminationIndex, check_text, generate_checked, load_index
from loki.distill.teachers import Generation, LokiTeacher, Teacher, make_teacher
from loki.errors import LokiError

log = logging.getLogger(__name__)
GROUND_TRUTH = "ground_truth"


# ---------------------------------------------------------------------- prompts
def student_tokenizer(cfg: BuildConfig, sets: list) -> tuple[Any, list]:
    """The student tokenizer and the shard sets made with it.

    With ``tokenizer`` set, shard sets made with another tokenizer (a stale corpus cache matched
    by a glob) are left out with a warning; none left, or mixed tokenizers without ``tokenizer``,
    is an error."""
    from loki.tokenizer import LokiTokenizer

    spec = cfg.tokenizer or sets[0].manifest["tokenizer"].get("spec")
    if not spec:
        raise LokiError("set `tokenizer:` (the shards' manifest names no tokenizer spec)")
    tok = LokiTokenizer.from_spec(spec)
    tok.spec = str(spec)
    hashes = {s.vocab_hash for s in sets}
    if cfg.tokenizer is None and len(hashes) != 1:
        raise LokiError(f"prompt shards were made with different tokenizers: {sorted(hashes)}")
    kept = [s for s in sets if s.vocab_hash == tok.vocab_hash]
    if not kept:
        raise LokiError(f"tokenizer {spec} has vocab_hash {tok.vocab_hash} but the prompt shards "
                        f"were made with {sorted(hashes)}")
    for s in sets:
        if s.vocab_hash != tok.vocab_hash:
            log.warning("prompt shards %s use vocab_hash %s, not the student's %s: left out",
                        s.manifest_path, s.vocab_hash, tok.vocab_hash)
    return tok, kept


def open_shards(cfg: BuildConfig) -> list:
    from loki.data.shards import TokenShardSet, expand_locations

    if not cfg.prompts.shards:
        raise LokiError("prompts.shards is empty: give the token shard folders of the training data")
    return [TokenShardSet.open(loc) for loc in expand_locations(cfg.prompts.shards)]


def sample_windows(sets: list, p: PromptConfig) -> list[tuple[int, int, int, int]]:
    """The prompt set: (shard set, shard, first token, document text end), in sample order."""
    windows = []
    step = p.prompt_tokens + p.max_new_tokens
    for s, shard_set in enumerate(sets):
        for i in range(len(shard_set.manifest["shards"])):
            starts = shard_set.reader(i).documents(shard_set, i).astype(np.int64)
            for a, b in zip(starts[:-1].tolist(), starts[1:].tolist()):
                end = b - 1  # the last token of a document is end-of-text
                last = end - p.prompt_tokens - p.min_ground_truth
                windows += [(s, i, off, end) for off in range(a, last + 1, step)]
    rng = np.random.default_rng(p.seed)
    order = rng.permutation(len(windows))[: p.num_prompts]
    return [windows[j] for j in order.tolist()]


# ---------------------------------------------------------------------- one task
def build_shard(cfg: BuildConfig, rank: int = 0, world_size: int = 1,
                index: ContaminationIndex | None = None,
                teachers: list[Teacher] | None = None) -> dict:
    """Generate and write task ``rank``'s shard; returns its marker (skips a finished task)."""
    marker = Path(cfg.output) / "shards" / f"{shard_name(rank)}.json"
    if marker.is_file():
        import json

        return json.loads(marker.read_text())
    start = time.perf_counter()
    student, sets = student_tokenizer(cfg, open_shards(cfg))
    p = cfg.prompts
    windows = sample_windows(sets, p)
    mine = list(range(rank, len(windows), world_size))
    Lp, C = p.prompt_tokens, p.max_new_tokens
    prompt_ids = np.zeros((len(mine), Lp), dtype=np.int32)
    teachers = teachers if teachers is not None else [make_teacher(t) for t in cfg.teachers]
    for teacher in teachers:
        if hasattr(teacher, "share_budget"):  # a per-run budget, split over the build's tasks
            teacher.share_budget(world_size)
    k = 1 + len(teachers)
    cont = np.full((len(mine), k, C), student.pad_id, dtype=np.int32)
    cont_len = np.zeros((len(mine), k), dtype=np.int32)
    n_bytes = np.zeros((len(mine), k), dtype=np.int32)
    seeds = np.full((len(mine), k), -1, dtype=np.int64)
    attempts = np.zeros((len(mine), k), dtype=np.int16)
    K = cfg.soft_top_k
    soft_ids = np.full((len(mine), k, C, K), -1, dtype=np.int32) if K else None
    soft_lp = np.full((len(mine), k, C, K), -np.inf, dtype=np.float16) if K else None
    token_bytes = token_byte_lengths(student)
    if index is None:
        index = load_index(cfg.decontam.index)
    report: dict[str, dict[str, int]] = {GROUND_TRUTH: {"candidates": 0, "benchmark_flagged": 0}}
    texts = []
    for row, w in enumerate(mine):
        s, i, off, end = windows[w]
        toks = sets[s].reader(i).read(off, min(Lp + C, end - off))
        prompt_ids[row] = toks[:Lp]
        gt = toks[Lp:Lp + C]
        cont[row, 0, : len(gt)], cont_len[row, 0] = gt, len(gt)
        n_bytes[row, 0] = int(token_bytes[gt].sum())
        texts.append(student.decode(toks[:Lp].tolist()))
        report[GROUND_TRUTH]["candidates"] += 1
        if check_text(index, texts[-1], student.decode(gt.tolist())):
            report[GROUND_TRUTH]["benchmark_flagged"] += 1  # kept: it is the training text itself
    for j, teacher in enumerate(teachers, start=1):
        if isinstance(teacher, LokiTeacher):
            teacher.check_student(student)
            teacher.eot_id = student.eot_id if teacher.eot_id is None else teacher.eot_id
        rep = report.setdefault(teacher.name, {
            "candidates": 0, "kept": 0, "regenerations": 0, "dropped_benchmark": 0,
            "dropped_empty": 0, "soft_targets": 0, "soft_unaligned": 0})
        checked = generate_checked(
            lambda rows, seed, teacher=teacher: teacher.generate(
                [texts[r] for r in rows], [prompt_ids[r].tolist() for r in rows], seed),
            texts, lambda gen: _student_ids(gen, student, C),
            lambda attempt, j=j: _seed(cfg.seed, j, rank, attempt), index,
            cfg.decontam.max_tries, teacher.name)
        attempts[:, j] = checked.attempts
        rep["regenerations"] += checked.regenerations
        rep["dropped_benchmark"] += len(checked.dropped)
        rep["candidates"] += len(mine)
        for r, kept in enumerate(checked.kept):
            if kept is None:
                continue
            gen, ids, _, seed = kept
            if not ids:
                rep["dropped_empty"] += 1
                continue
            rep["kept"] += 1
            cont[r, j, : len(ids)], cont_len[r, j] = ids, len(ids)
            n_bytes[r, j] = int(token_bytes[ids].sum())
            seeds[r, j] = seed
            if K:
                soft = _soft_targets(gen, student, ids, K)
                if soft is None:
                    rep["soft_unaligned"] += gen.top_logprobs is not None
                else:
                    soft_ids[r, j, : len(ids)], soft_lp[r, j, : len(ids)] = soft
                    rep["soft_targets"] += 1
    arrays = {"prompt_ids": prompt_ids, "prompt_index": np.asarray(mine, dtype=np.int64),
              "cont_ids": cont, "cont_len": cont_len, "n_bytes": n_bytes, "seeds": seeds,
              "attempts": attempts}
    if K:
        arrays.update(soft_ids=soft_ids, soft_logprobs=soft_lp)
    info = {"report": report, "seconds": round(time.perf_counter() - start, 2),
            "windows_available": len(windows)}
    write_shard(cfg.output, rank, arrays, info)
    return info


def _seed(base: int, teacher: int, rank: int, attempt: int) -> int:
    """Distinct, reproducible seeds per teacher, task and try."""
    return (base * 1_000_003 + teacher * 10_007 + rank * 101 + attempt * 7_919_981) % 2**31


def _student_ids(gen: Generation, student, C: int) -> tuple[list[int], str]:
    """Student ids (at most C) and the text checked for benchmark copies."""
    if gen.token_ids is not None:
        ids = [t for t in gen.token_ids if t != student.eot_id]
        return ids[:C], student.decode(ids)
    text = gen.text or ""
    return student.encode(text)[:C], text


def _soft_targets(gen: Generation, student, ids: list[int], K: int):
    """(ids (n, K), logprobs (n, K)) in student ids, or None when they do not map one-to-one."""
    if gen.top_logprobs is None:
        return None
    n = len(ids)
    out_ids = np.full((n, K), -1, dtype=np.int32)
    out_lp = np.full((n, K), -np.inf, dtype=np.float16)
    if gen.top_ids is not None:  # shared vocabulary
        for t in range(min(n, len(gen.top_ids))):
            m = min(K, len(gen.top_ids[t]))
            out_ids[t, :m], out_lp[t, :m] = gen.top_ids[t][:m], gen.top_logprobs[t][:m]
        return out_ids, out_lp
    if gen.tokens is None or gen.top_tokens is None:
        return None
    mapped = [student.encode(tok) for tok in gen.tokens[:n]]
    if len(mapped) < n or any(len(m) != 1 for m in mapped) or [m[0] for m in mapped] != ids:
        return None  # the teacher's tokens are not the student's: no position-wise targets
    for t in range(n):
        for c, (tok, lp) in enumerate(zip(gen.top_tokens[t][:K], gen.top_logprobs[t][:K])):
            enc = student.encode(tok)
            if len(enc) == 1:
                out_ids[t, c], out_lp[t, c] = enc[0], lp
    return out_ids, out_lp


def token_byte_lengths(student) -> np.ndarray:
    """(V,) UTF-8 bytes of every student token (0 for ids without a token)."""
    out = np.zeros(student.vocab_size, dtype=np.int64)
    for idx in range(student.vocab_size):
        try:
            out[idx] = len(student.token_bytes(idx))
        except KeyError:
            out[idx] = 0
    return out


# ---------------------------------------------------------------------- the whole build
def header(cfg: BuildConfig, student, teachers: list[Teacher]) -> dict:
    return {
        "student": {"tokenizer": getattr(student, "spec", student.name),
                    "vocab_hash": student.vocab_hash, "vocab_size": student.vocab_size,
                    "pad_id": student.pad_id, "eot_id": student.eot_id},
        "prompt_tokens": cfg.prompts.prompt_tokens, "max_new_tokens": cfg.prompts.max_new_tokens,
        "sources": [{"name": GROUND_TRUTH, "kind": "ground_truth"}] + [
            {"name": t.name, **t.identity(), "seed_rule": "per try: _seed(seed, teacher, task, "
             "try); HF/Loki batches add the batch offset; API requests add the prompt offset"}
            for t in teachers],
        "soft_top_k": cfg.soft_top_k,
        "decontam": asdict(cfg.decontam),
        "prompts_config": asdict(cfg.prompts), "seed": cfg.seed,
        "tasks": cfg.executor.tasks,
    }


def build(cfg: BuildConfig) -> dict:
    """Run every task through the configured executor, then write the manifest."""
    names = [make_teacher(t).name for t in cfg.teachers]
    if len(set(names)) != len(names) or "ground_truth" in names:
        raise LokiError(f"teacher names must be unique and not 'ground_truth': {names}")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    _claim_output(cfg)
    from functools import partial

    from loki.distill.executor import run_tasks

    submitted = run_tasks(cfg.executor, partial(build_shard, cfg), f"{cfg.output}/logs",
                          "distill candidates")
    if submitted:
        return {"submitted": True}
    return finalize_cache(cfg)


def _claim_output(cfg: BuildConfig) -> None:
    """Finished tasks are skipped on a rerun, so a folder holding shards of another build (other
    tokenizer, prompts, teachers, seeds) must never be continued: refuse it."""
    import json

    student, _ = student_tokenizer(cfg, open_shards(cfg))
    recipe = {k: v for k, v in asdict(cfg).items() if k not in ("executor", "output")}
    recipe.update(student_vocab_hash=student.vocab_hash, tasks=cfg.executor.tasks)
    path = Path(cfg.output) / "build.json"
    if path.is_file():
        if json.loads(path.read_text()) != json.loads(json.dumps(recipe)):
            raise LokiError(f"{cfg.output} holds a cache built with another config or tokenizer "
                            f"(see {path}); delete the folder or choose another output")
        return
    path.write_text(json.dumps(recipe, indent=1) + "\n")


def finalize_cache(cfg: BuildConfig) -> dict:
    student, _ = student_tokenizer(cfg, open_shards(cfg))
    np.save(Path(cfg.output) / "token_bytes.npy", token_byte_lengths(student).astype(np.int32))
    teachers = [make_teacher(t) for t in cfg.teachers]
    return finalize(cfg.output, header(cfg, student, teachers), cfg.executor.tasks)

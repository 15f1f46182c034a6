"""The stages of a filter run, in order: what each runs (datatrove steps), reads and writes.

Sharded stages read the previous stage's JSONL shards and write their own (``<work>/stages/<n>``);
global steps (k-means fit, prototype selection, benchmark-index build, MinHash clustering) run as
single-task executors between them, the way datatrove stages its own MinHash dedup.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from loki.filtering.config import FilterConfig, TrainQualityConfig


@dataclass
class Stage:
    """One row of the report: a name, the executors' (label, pipeline, tasks) it runs, and what
    tells whether its earlier results still hold (``loki.filtering.signatures``)."""

    name: str
    jobs: list[tuple[str, list, int]] = field(default_factory=list)
    output: str | None = None  # folder holding this stage's kept documents
    settings: dict = field(default_factory=dict)  # what decides its results, besides what it reads
    writes: list[str] = field(default_factory=list)  # its other files in work_dir
    chained: bool = True  # reads the documents of the chained stage before it
    product: str | None = None  # what it makes outside work_dir: redone when that is gone


def doc_text(doc) -> str:
    """Content hashed by exact dedup (module level so spawned workers can pickle it)."""
    return doc.text


class StagePlan:
    """The stages of one ``FilterConfig``."""

    def __init__(self, cfg: FilterConfig):
        self.cfg = cfg
        self.work = cfg.work_dir.rstrip("/")

    def _reader(self, folder: str):
        from loki.filtering.readers import StageReader

        return StageReader(folder, glob_pattern="*.jsonl.gz")

    def _writer(self, folder: str, name: str = "${rank}.jsonl.gz"):
        from datatrove.pipeline.writers import JsonlWriter

        return JsonlWriter(folder, output_filename=name, expand_metadata=False)

    def _removed(self, stage: str, step: str):
        return self._writer(f"{self.work}/removed/{stage}", f"{step}_${{rank}}.jsonl.gz")

    def _sharded(self, stage: str, label: str, src: str, steps: list, dst: str, final=False):
        from loki.filtering.steps import StripPrivate, Tally

        tail = [StripPrivate()] if final else []
        pipeline = [self._reader(src), Tally("in"), *steps, *tail, Tally("out"), self._writer(dst)]
        return (label, pipeline, self.cfg.executor.tasks)

    def stages(self) -> list[Stage]:
        """Every stage of the config, in run order; builds the steps, creates no folder."""
        from loki.filtering.readers import InputGuard, make_readers
        from loki.filtering.signatures import (
            StageRef,
            files_id,
            quality_head,
            section,
            trains_head,
        )
        from loki.filtering.steps import LengthFilter, Tally, TextNormalizer

        cfg, work = self.cfg, self.work
        out: list[Stage] = []
        if cfg.decontam.enabled:  # global, first: a missing task file fails before any work
            from loki.filtering.benchmark_index import config_fingerprint
            from loki.filtering.decontam import BuildBenchmarkIndex

            d = cfg.decontam
            files = [t.path for t in d.tasks] + ([d.data_dir] if d.data_dir else [])
            out.append(Stage("decontam_index", [("build", [BuildBenchmarkIndex(d, work)], 1)],
                             settings={"index": config_fingerprint(d), "files": files_id(files)},
                             writes=[f"{work}/decontam/index.npz"], chained=False))
        # the head is trained when absent; once trained here it stays a stage (reused while its
        # data and embedder are the same), so a rerun reports it as the run that trained it did
        if cfg.quality.enabled and trains_head(cfg.quality.model_path, work):
            from loki.filtering.quality import seed_path

            q = cfg.quality
            data = str(seed_path()) if q.train_data == "seed" else q.train_data
            out.append(Stage("quality_train", [("train", [self._train_quality_step()], 1)],
                             settings={"train_data": files_id([data]), "embed.model":
                                       cfg.embed.model, "embed.max_chars": cfg.embed.max_chars},
                             chained=False, product=q.model_path))

        # 1. read + clean (always runs: it is where inputs are read and bad input is counted)
        stage = f"{work}/stages/01_clean"
        steps = [*make_readers(cfg.input), InputGuard(cfg.input.max_doc_bytes, cfg.input.source),
                 Tally("in")]
        c = cfg.clean
        if c.enabled:
            steps.append(TextNormalizer(c.unicode_form, c.boilerplate_patterns,
                                        self._removed("clean", "boilerplate")))
            steps.append(LengthFilter(c.min_chars, c.max_chars, self._removed("clean", "length")))
            if c.gopher_repetition:
                from datatrove.pipeline.filters import GopherRepetitionFilter

                steps.append(GopherRepetitionFilter(
                    exclusion_writer=self._removed("clean", "gopher_repetition")))
            if c.gopher_quality:
                from datatrove.pipeline.filters import GopherQualityFilter

                steps.append(GopherQualityFilter(
                    min_doc_words=c.gopher_min_doc_words,
                    exclusion_writer=self._removed("clean", "gopher_quality")))
            if c.c4:
                from datatrove.pipeline.filters import C4QualityFilter

                steps.append(C4QualityFilter(filter_no_terminal_punct=False,
                                             exclusion_writer=self._removed("clean", "c4")))
        steps += [Tally("out"), self._writer(stage)]
        out.append(Stage("clean", [("filter", steps, cfg.executor.tasks)], stage, settings={
            "input": section(cfg.input), "input_files": files_id(cfg.input.paths),
            "clean": section(cfg.clean), "executor.tasks": cfg.executor.tasks}))
        prev = stage

        if cfg.dedup.exact:
            out.append(self._exact_dedup(prev))
            prev = out[-1].output
        if cfg.dedup.minhash:
            out.append(self._minhash(prev))
            prev = out[-1].output
        emb = f"{work}/embeddings"
        clusters = f"{work}/clusters"
        if cfg.needs_embeddings:
            from loki.filtering.embed import EmbedDocuments

            dst = f"{work}/stages/04_embed"
            e = cfg.embed
            out.append(Stage("embed", [self._sharded("embed", "embed", prev, [EmbedDocuments(
                emb, e.model, e.batch_size, e.max_chars, e.dtype, e.device)], dst)], dst,
                settings={"embed": section(e, "batch_size")}, writes=[emb]))
            prev = dst
        if cfg.semdedup.enabled or cfg.prototypes.enabled:
            from loki.filtering.clustering import ClusterAssign, ClusterFit
            from loki.filtering.semantic import ClusterPrune

            s, tasks = cfg.semdedup, cfg.executor.tasks
            out.append(Stage("kmeans", [
                ("fit", [ClusterFit(emb, clusters, s.docs_per_cluster, s.n_clusters, s.seed,
                                    s.fit_sample, s.kmeans)], 1),
                ("assign", [ClusterAssign(emb, clusters)], tasks),
                ("prune", [ClusterPrune(clusters, s.enabled, cfg.prototypes.enabled, s.eps, s.keep,
                                        s.compare_to, s.max_cluster_size, s.seed, s.kmeans)],
                 tasks)], settings={"semdedup": section(s), "prototypes.enabled":
                                    cfg.prototypes.enabled}, writes=[clusters]))
        if cfg.semdedup.enabled:
            from loki.filtering.semantic import SemanticFilter

            dst = f"{work}/stages/05_semdedup"
            out.append(Stage("semdedup", [self._sharded("semdedup", "filter", prev, [SemanticFilter(
                clusters, "semdedup", self._removed("semdedup", "semdedup"))], dst)], dst))
            prev = dst
        if cfg.prototypes.enabled:
            from loki.filtering.semantic import PrototypeSelect, SemanticFilter

            p, dst = cfg.prototypes, f"{work}/stages/06_prototypes"
            out.append(Stage("prototypes", [
                ("select", [PrototypeSelect(clusters, p.keep_fraction, p.keep)], 1),
                self._sharded("prototypes", "filter", prev, [SemanticFilter(
                    clusters, "prototype", self._removed("prototypes", "prototype"))], dst)], dst,
                settings={"prototypes": section(p)}, writes=[f"{clusters}/prototypes.json"]))
            prev = dst
        if cfg.quality.enabled:
            from loki.filtering.quality import QualityFilter

            q, dst = cfg.quality, f"{work}/stages/07_quality"
            out.append(Stage("quality", [self._sharded("quality", "filter", prev, [QualityFilter(
                q.model_path, emb, q.threshold, self._removed("quality", "low_quality"))], dst)],
                dst, settings={"quality.threshold": q.threshold,
                               "quality_head": quality_head(q.model_path, work)}))
            prev = dst
        if cfg.factual.enabled:
            from loki.filtering.factual import FactualPruner

            f, dst = cfg.factual, f"{work}/stages/08_factual"
            out.append(Stage("factual", [self._sharded("factual", "prune", prev, [FactualPruner(
                f.strength, f.min_chars, self._removed("factual", "factual"))], dst)], dst,
                settings={"factual": section(f)}))
            prev = dst
        if cfg.decontam.enabled:
            from loki.filtering.decontam import DecontamCount, DecontamFrequent, Decontaminate

            d, index = cfg.decontam, f"{work}/decontam/index.npz"
            counts, frequent = f"{work}/decontam/counts", f"{work}/decontam/frequent.json"
            final = f"{work}/stages/09_decontam"
            out.append(Stage("decontam", [
                ("count", [self._reader(prev), DecontamCount(index, counts)], cfg.executor.tasks),
                ("frequent", [DecontamFrequent(counts, frequent, d.max_corpus_docs,
                                               d.frequent_fraction)], 1),
                self._sharded("decontam", "filter", prev, [Decontaminate(
                    index, frequent, d.window, d.min_fragment, d.max_hits,
                    self._removed("decontam", "benchmark"))], final, final=True)], final,
                settings={"decontam": section(d, "tasks", "lm_eval_tasks"),
                          "index": StageRef("decontam_index")}, writes=[counts, frequent]))
        else:
            final = f"{work}/stages/09_write"
            out.append(Stage("write", [self._sharded("write", "write", prev, [], final, final=True)],
                             final))
        # the staged set goes into output_dir whole, once complete (loki.filtering.publish)
        from loki.filtering.publish import PublishOutput

        target = cfg.output_dir if "://" in cfg.output_dir else os.path.abspath(cfg.output_dir)
        out.append(Stage("publish", [("publish", [PublishOutput(final, cfg.output_dir)], 1)],
                         settings={"output_dir": target}, product=cfg.output_dir))
        return out

    def _train_quality_step(self):
        from loki.filtering.signatures import record_trained_head

        cfg, work = self.cfg, self.work

        def train(data, rank: int = 0, world_size: int = 1):
            from loki.filtering.quality import train_quality

            # the stage exists only for a head absent or trained by this work_dir: one found now
            # was written by an earlier attempt of this job (e.g. killed before its completion
            # marker) or by the run whose training data or embedder changed since
            train_quality(TrainQualityConfig(data=cfg.quality.train_data,
                                             output=cfg.quality.model_path,
                                             embedder=cfg.embed.model,
                                             max_chars=cfg.embed.max_chars, overwrite=True))
            record_trained_head(cfg.quality.model_path, work)
            return iter(())

        return train

    def _exact_dedup(self, src: str) -> Stage:
        from datatrove.pipeline.dedup.exact_dedup import (
            ExactDedupConfig,
            ExactDedupFilter,
            ExactDedupSignature,
            ExactFindDedups,
        )

        work, tasks = f"{self.work}/exact", self.cfg.executor.tasks
        config = ExactDedupConfig(content_getter=doc_text)
        dst = f"{self.work}/stages/02_exact"
        return Stage("exact_dedup", [
            ("signatures", [self._reader(src), ExactDedupSignature(f"{work}/sigs", config)], tasks),
            ("find", [ExactFindDedups(f"{work}/sigs", f"{work}/dups", config=config)], 1),
            self._sharded("exact_dedup", "filter", src, [ExactDedupFilter(
                f"{work}/dups", config, self._removed("exact_dedup", "exact"))], dst)], dst,
            writes=[work])

    def _minhash(self, src: str) -> Stage:
        from datatrove.pipeline.dedup.minhash import (
            MinhashConfig,
            MinhashDedupBuckets,
            MinhashDedupCluster,
            MinhashDedupFilter,
            MinhashDedupSignature,
        )

        from loki.filtering.signatures import section

        d, work, tasks = self.cfg.dedup, f"{self.work}/minhash", self.cfg.executor.tasks
        config = MinhashConfig(n_grams=d.n_grams, num_buckets=d.num_buckets,
                               hashes_per_bucket=d.hashes_per_bucket)
        dst = f"{self.work}/stages/03_minhash"
        return Stage("minhash_dedup", [
            ("signatures", [self._reader(src), MinhashDedupSignature(f"{work}/sigs", config)], tasks),
            ("buckets", [MinhashDedupBuckets(f"{work}/sigs", f"{work}/buckets", config=config)],
             d.num_buckets),
            ("cluster", [MinhashDedupCluster(f"{work}/buckets", f"{work}/remove_ids", config=config)], 1),
            self._sharded("minhash_dedup", "filter", src, [MinhashDedupFilter(
                f"{work}/remove_ids", self._removed("minhash_dedup", "near_duplicate"))], dst)], dst,
            settings={"dedup": section(d, "exact", "minhash")}, writes=[work])

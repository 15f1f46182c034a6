"""The checks a filter run makes before it writes anything: a mistake in the config or the files
it names is one line, with work_dir and output_dir as they were.

Building the stage list (``StagePlan.stages``) checks that the inputs exist; building the benchmark
index in memory checks the decontamination tasks (``prebuilt_index``), and the run saves it only
once everything passed.
"""

from __future__ import annotations

import os

from loki.errors import LokiError
from loki.filtering.config import FilterConfig


def check_run(cfg: FilterConfig) -> None:
    """Output and work folders, the embedder and the quality head or its training data."""
    from loki.filtering.embed import check_embedder
    from loki.filtering.publish import check_output_dir
    from loki.output import check_writable

    if "://" not in cfg.output_dir:  # remote: fsspec decides
        # publishing builds <output_dir>.partial beside output_dir and renames it in
        check_writable(os.path.dirname(os.path.abspath(cfg.output_dir)))
        check_output_dir(cfg.output_dir)
    if "://" not in cfg.work_dir:
        check_writable(cfg.work_dir, "work_dir")
    if cfg.needs_embeddings:
        check_embedder(cfg.embed.model)
    if cfg.quality.enabled:
        check_quality_head(cfg)


def check_quality_head(cfg: FilterConfig) -> None:
    """A head must have been trained on the embeddings this run computes; a head still to train
    needs its labelled data."""
    from loki.filtering.quality import QualityHead

    q = cfg.quality
    if not os.path.exists(q.model_path):
        if q.train_data != "seed" and not os.path.isfile(q.train_data):
            raise LokiError(f"quality.model_path {q.model_path} is absent and quality.train_data "
                            f"{q.train_data!r} (to train it from) does not exist; name a "
                            "labelled JSONL file, or seed")
        return
    head = QualityHead.load(q.model_path)
    if head.embedder != cfg.embed.model:
        raise LokiError(f"quality head {q.model_path} was trained on {head.embedder!r} "
                        f"embeddings but embed.model is {cfg.embed.model!r}; retrain it or "
                        "change embed.model")


def prebuilt_index(cfg: FilterConfig, reused: bool):
    """The benchmark index built in memory when the decontam_index stage will build it (a bad
    task is a LokiError here, before any write); None when it is reused or decontam is off."""
    if not cfg.decontam.enabled or reused:
        return None
    from loki.filtering.benchmark_index import BenchmarkIndex

    return BenchmarkIndex.from_config(cfg.decontam)

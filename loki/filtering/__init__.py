"""Data filtering: raw web text -> clean, deduplicated, decontaminated JSONL shards.

Stages (each toggled in ``experiments/data/<name>.yaml``, see ``config.py``): clean, exact and
MinHash dedup, embed, SemDeDup, SSL-prototype pruning, quality classifier, factual-statement
pruning, benchmark decontamination; documents keep their ``source`` tag throughout. Built on
datatrove; ``pipeline.FilterPipeline`` runs them, ``decontam.BenchmarkIndex`` is reusable on its own.
Heavy modules are imported by the stage modules, not here.
"""

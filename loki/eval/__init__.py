"""Evaluation: the lm-eval adapter (model type ``"loki"``), task presets and local task files,
Table-1 rendering, the one-shot ``loki eval``, ``loki generate``, ``loki probe`` and
``loki compare``.

Nothing here imports lm-eval at package import: ``loki.eval.adapter`` does, on use.
"""

"""Exports of Loki checkpoints for other toolkits (``loki export``): ``hf`` writes a transformers
model folder with remote code and a ``tokenizer.json``. Nothing heavy is imported here."""

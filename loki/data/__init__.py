"""Token shards, the streaming ``LokiDataModule``, batch-size warmup and mixture schedules.

Heavy pieces are imported on use: ``from loki.data.datamodule import LokiDataModule``.
"""

from __future__ import annotations

__all__ = ["LokiDataModule"]


def __getattr__(name: str):
    if name == "LokiDataModule":
        from loki.data.datamodule import LokiDataModule

        return LokiDataModule
    raise AttributeError(name)

"""LokiLM: reproduce and study the LokiLM recipe on PyTorch Lightning."""

from loki.config import LokiConfig

__all__ = ["LokiConfig"]
__version__ = "0.1.0"

"""The one place that knows which optional packages are importable, and which extra brings them."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from loki.errors import LokiError


def available(module: str) -> bool:
    """True when ``module`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or fail with the pip extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise LokiError(
            f"{module} is needed here but cannot be imported ({err}); "
            f"install it with: pip install 'lokilm[{extra}]'"
        ) from err

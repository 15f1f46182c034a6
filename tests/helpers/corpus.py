"""A small real-text JSONL corpus for the tokenizer tests: the standard library's own source."""

from __future__ import annotations

import json
from pathlib import Path


def jsonl_corpus(root: Path) -> Path:
    """``root/part{0,1}.jsonl``: the paragraphs of two standard-library modules, one document a
    line with a ``text`` field. Returns ``root``."""
    import argparse
    import typing

    root.mkdir(parents=True, exist_ok=True)
    for i, mod in enumerate((argparse, typing)):
        lines = [json.dumps({"text": c}) for c in Path(mod.__file__).read_text().split("\n\n")]
        (root / f"part{i}.jsonl").write_text("\n".join(lines) + "\n")
    return root

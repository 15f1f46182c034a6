"""Small pipeline steps shared by every stage: counting, cleaning text, length bounds."""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter


@contextlib.contextmanager
def exclusions(writer: DiskWriter | None) -> Iterator[DiskWriter | None]:
    """A modifying step's exclusion writer (what it removed, for the report), open for one run."""
    if writer is None:
        yield None
        return
    with writer:
        yield writer


class Tally(PipelineStep):
    """Counts documents and UTF-8 bytes passing this point (``docs_<side>``, ``bytes_<side>``).

    Each stage puts one before its steps (side ``in``) and one before its writer (``out``); the
    report reads them from the per-task stats files, so resumed runs still add up.
    """

    type = "🧮 - TALLY"

    def __init__(self, side: str):
        self.name = f"tally {side}"  # before super().__init__: the stats object takes the name
        super().__init__()
        self.side = side

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update(f"docs_{self.side}")
            self.stat_update(f"bytes_{self.side}", value=len(doc.text.encode("utf-8")))
            yield doc


class StripPrivate(PipelineStep):
    """Removes the pipeline's own ``_``-prefixed metadata keys before the final writer."""

    type = "🧹 - FORMAT"
    name = "strip private metadata"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            doc.metadata = {k: v for k, v in doc.metadata.items() if not k.startswith("_")}
            yield doc


# C0/C1 control characters except tab and newline (carriage returns are normalized below)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u3000]+")
_BLANKS = re.compile(r"\n{3,}")


class TextNormalizer(PipelineStep):
    """Unicode normal form, control characters, whitespace and boilerplate lines.

    Modifies text in place; the removed boilerplate lines go to the exclusion writer (as one
    document per affected input) so the report can show what cleaning took out.
    """

    type = "✂️ - MODIFIER"
    name = "normalize text"

    def __init__(self, unicode_form: str = "NFC", boilerplate_patterns: list[str] | None = None,
                 exclusion_writer: DiskWriter | None = None):
        super().__init__()
        self.unicode_form = unicode_form
        self.patterns = [re.compile(p) for p in boilerplate_patterns or []]
        self.exclusion_writer = exclusion_writer

    def normalize(self, text: str) -> tuple[str, list[str]]:
        """Returns (clean text, removed boilerplate lines)."""
        text = unicodedata.normalize(self.unicode_form, text)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        text = _CONTROL.sub("", text)
        kept, removed = [], []
        for line in text.split("\n"):
            line = _SPACES.sub(" ", line).strip()
            if line and any(p.search(line) for p in self.patterns):
                removed.append(line)
            else:
                kept.append(line)
        return _BLANKS.sub("\n\n", "\n".join(kept)).strip(), removed

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with exclusions(self.exclusion_writer) as writer:
            for doc in data:
                with self.track_time():
                    doc.text, removed = self.normalize(doc.text)
                if removed:
                    self.stat_update("boilerplate_lines", value=len(removed))
                    if writer:
                        writer.write(Document(text="\n".join(removed), id=doc.id,
                                              metadata={"filter_reason": "boilerplate_lines"}), rank)
                yield doc


class LengthFilter(BaseFilter):
    """Keeps documents whose length in characters is within [min_chars, max_chars]."""

    name = "📏 length bounds"

    def __init__(self, min_chars: int, max_chars: int, exclusion_writer: DiskWriter | None = None):
        super().__init__(exclusion_writer)
        self.min_chars = min_chars
        self.max_chars = max_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if len(doc.text) < self.min_chars:
            return False, "too_short"
        if len(doc.text) > self.max_chars:
            return False, "too_long"
        return True

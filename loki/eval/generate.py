"""``loki generate``: sample continuations of prompts from a checkpoint.

    loki generate --checkpoint runs/demo/checkpoints/last.ckpt --prompts prompts.txt \\
        --sampling.temperature 0.8 --sampling.top_p 0.95 --sampling.num_samples 2 \\
        --output samples.jsonl
    loki generate --checkpoint runs/demo/checkpoints/last.ckpt --prompt+ "Once upon a time"

Prompts come from ``--prompt`` (a list: ``--prompt+ TEXT`` once per prompt, or
``--prompt '[TEXT, ...]'``) and/or ``--prompts`` (a UTF-8 text file with one prompt per line, or
JSON lines with a ``"prompt"`` field). Each prompt's samples share one batch and KV cache;
generation stops at ``max_new_tokens``, the end-of-text token or any ``--sampling.stop`` string.
The samples are printed, then written to ``--output`` (JSON lines, atomically) when given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from loki import atomic
from loki.errors import LokiError
from loki.model import KVCache, _sample
from loki.output import check_writable

DESCRIPTION = (
    "Sample continuations of prompts from a checkpoint. Give prompts with --prompt+ TEXT (once "
    "per prompt) and/or --prompts FILE (one prompt per line, or JSON lines with a \"prompt\" "
    "field). The samples are printed, and written as JSON lines to --output when given.")


@dataclass
class SamplingConfig:
    """How continuations are drawn."""

    max_new_tokens: int = 128
    """Tokens generated at most per sample."""
    temperature: float = 0.8
    """Softmax temperature; 0 is greedy."""
    top_k: int | None = None
    """Keep only the k most likely tokens (null: all)."""
    top_p: float | None = 0.95
    """Nucleus sampling: keep the most likely tokens up to this probability mass (null or 1:
    off)."""
    num_samples: int = 1
    """Samples per prompt."""
    stop: list[str] = field(default_factory=list)
    """Strings that end a sample (cut before them); the end-of-text token always does."""
    seed: int = 0
    """Sampling seed (same seed, prompts and checkpoint -> same samples)."""

    def __post_init__(self) -> None:
        # checked here, before a checkpoint is loaded; the model's sampler would fail (or quietly
        # do something else) only once generation has started
        problems = []
        if not self.temperature >= 0:
            problems.append(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            problems.append(f"top_k must be >= 1 or null (all tokens), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1] or null (1 and null: off), got {self.top_p}")
        for name in ("max_new_tokens", "num_samples"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if problems:
            raise LokiError("sampling." + "; sampling.".join(problems))


@torch.no_grad()
def generate_with_stops(
    model, tokenizer, contexts: list[list[int]], max_new_tokens: int, until: Sequence[str],
    temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> list[str]:
    """Continuations of same-length token contexts, each cut before its first stop string."""
    device = next(model.parameters()).device
    idx = torch.tensor(contexts, dtype=torch.long, device=device)  # (B, T)
    B, T = idx.shape
    cache = KVCache(model.config, B, T + max_new_tokens, device, next(model.parameters()).dtype)
    new: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    texts = [""] * B
    logits, _ = model(idx, kv_cache=cache)  # prefill: (B, T, V)
    for _ in range(max_new_tokens):
        next_id = _sample(logits[:, -1, :].float(), temperature, top_k, top_p, generator)  # (B, 1)
        for row in range(B):
            if done[row]:
                continue
            new[row].append(int(next_id[row]))
            texts[row] = tokenizer.decode(new[row])
            cut = _first_stop(texts[row], until)
            if cut is not None:
                texts[row], done[row] = texts[row][:cut], True
        if all(done):
            break
        logits, _ = model(next_id, kv_cache=cache)  # (B, 1, V)
    return texts


def _first_stop(text: str, until: Sequence[str]) -> int | None:
    cuts = [text.find(s) for s in until if s and s in text]
    return min(cuts) if cuts else None


def read_prompts(path: str | Path) -> list[str]:
    """The prompts in a UTF-8 text file (one per non-blank line) or, for ``.jsonl``/``.json``,
    JSON lines with a string ``"prompt"``."""
    path = Path(path)
    if path.is_dir():
        raise LokiError(f"prompts file {path} is a folder; give a text or JSON-lines file")
    if not path.is_file():
        raise LokiError(f"prompts file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise LokiError(f"prompts file {path} is not UTF-8 text (byte {err.start}: {err.reason}); "
                        "save it as UTF-8") from None
    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines:
        raise LokiError(f"prompts file {path} holds no prompts (blank lines are skipped)")
    if path.suffix not in (".jsonl", ".json"):
        return [ln for _, ln in lines]
    prompts = []
    for n, ln in lines:
        try:
            prompt = json.loads(ln)["prompt"]
        except (json.JSONDecodeError, KeyError, TypeError):
            prompt = None
        if not isinstance(prompt, str):
            raise LokiError(f"{path}, line {n}: every line must be a JSON object with a 'prompt' "
                            "string")
        prompts.append(prompt)
    return prompts


def check_output(output: str | Path, inputs: dict[str, str | None]) -> None:
    """Refuse, before a checkpoint is loaded, an ``--output`` that is a folder, cannot be
    written, or is one of ``inputs`` (what it is -> path), which writing it would replace."""
    out = Path(output)
    if out.is_dir():
        raise LokiError(f"--output {out} is a folder; give a file name such as samples.jsonl")
    for what, given in inputs.items():
        if given and out.exists() and Path(given).exists() and os.path.samefile(out, given):
            raise LokiError(f"--output {out} is the {what} ({given}); writing the samples there "
                            "would replace it: choose another file")
    check_writable(out.parent, f"--output {out}: its folder")


def sample(eval_model, prompts: list[str], cfg: SamplingConfig) -> list[dict]:
    """``[{"prompt", "samples": [str, ...]}]`` for each prompt."""
    tok, model = eval_model.tokenizer, eval_model.model
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    until = [*cfg.stop, tok.decode([tok.eot_id])]
    out = []
    for prompt in prompts:
        ids = tok.encode(prompt) or [tok.eot_id]  # an empty prompt starts a new document
        texts = generate_with_stops(model, tok, [ids] * cfg.num_samples, cfg.max_new_tokens,
                                    until, cfg.temperature, cfg.top_k, cfg.top_p, generator)
        out.append({"prompt": prompt, "samples": texts})
    return out


def main(argv: list[str] | None = None) -> None:
    from jsonargparse import ActionConfigFile

    from loki.eval.loading import load_for_eval
    from loki.tool_parser import tool_parser

    p = tool_parser(prog="loki generate", description=DESCRIPTION)
    p.add_argument("--config", action=ActionConfigFile)
    p.add_argument("--checkpoint", type=str, required=True, help=".ckpt file, distributed checkpoint folder or run folder (its checkpoints/last.ckpt)")
    p.add_argument("--tokenizer", type=str | None, default=None, help="default: from checkpoint")
    p.add_argument("--prompt", type=list[str], default=[],
                   help="prompts given inline: --prompt+ TEXT once per prompt")
    p.add_argument("--prompts", type=str | None, default=None,
                   help="file: one prompt per line, or JSON lines with a \"prompt\"")
    p.add_class_arguments(SamplingConfig, "sampling")
    p.add_argument("--device", type=str, default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", type=str, default="auto", help="auto, float32, bfloat16, float16")
    p.add_argument("--output", type=str | None, default=None,
                   help="also write the samples here as JSON lines")
    cfg = p.parse_args(argv)
    sampling = cfg.sampling if isinstance(cfg.sampling, SamplingConfig) else SamplingConfig(
        **vars(cfg.sampling))
    prompts = list(cfg.prompt) + (read_prompts(cfg.prompts) if cfg.prompts else [])
    if not prompts:
        raise LokiError("no prompts: pass --prompt+ TEXT (once per prompt) or --prompts FILE")
    if cfg.output:
        check_output(cfg.output, {"checkpoint": cfg.checkpoint, "prompts file": cfg.prompts})
    em = load_for_eval(cfg.checkpoint, cfg.tokenizer, cfg.device, cfg.dtype)
    results = sample(em, prompts, sampling)
    for r in results:  # printed first: a failed write below loses nothing
        for i, s in enumerate(r["samples"]):
            print(f"--- {r['prompt']!r} [{i}]\n{r['prompt']}{s}")
    if cfg.output:
        try:
            atomic.write_text(cfg.output, "".join(
                json.dumps({**r, "sampling": asdict(sampling), "checkpoint": em.checkpoint})
                + "\n" for r in results))
        except OSError as err:  # a full disk: the earlier file is still there
            raise LokiError(f"cannot write {cfg.output} ({err.strerror or err}); the samples "
                            "are printed above") from err
        n = sum(len(r["samples"]) for r in results)
        print(f"wrote {n} sample(s) of {len(results)} prompt(s) to {cfg.output}")

"""``LokiTeacher``: a Loki checkpoint trained with the student's tokenizer.

It continues the student token ids directly and can give exact top-k soft targets. The model
(and torch) are loaded on first use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from loki.distill.teachers.base import Generation, Sampling
from loki.errors import LokiError


@dataclass
class LokiTeacher:
    """A Loki checkpoint trained with the student's tokenizer (checked by vocabulary size here
    and by the builder against the cache's tokenizer)."""

    checkpoint: str
    """Path of a Lightning .ckpt written by `loki fit`."""
    name: str = ""
    """Source name in the cache (default: the checkpoint file's stem)."""
    sampling: Sampling = field(default_factory=Sampling)
    """Sampling parameters (max_new_tokens counts student tokens here)."""
    device: str = "cpu"
    """torch device."""
    batch_size: int = 16
    """Prompts per generate call."""
    top_logprobs: int = 0
    """Top-k soft targets in student ids (exact: the same vocabulary)."""
    eot_id: int | None = None
    """End-of-text id where a continuation stops (set by the builder from the tokenizer)."""
    shares_student_vocab: bool = True

    def __post_init__(self) -> None:
        from pathlib import Path

        self.name = self.name or Path(self.checkpoint).stem
        self._model = None
        self.hparams: dict | None = None

    def identity(self) -> dict[str, Any]:
        return {"kind": "loki", "checkpoint": self.checkpoint,
                "sampling": asdict(self.sampling)}

    def load(self):
        if self._model is None:
            from loki.module import load_model

            self._model, self.config, self.hparams = load_model(self.checkpoint)
            self._model.to(self.device)
        return self._model

    def check_student(self, student) -> None:
        """The checkpoint must have been trained with ``student`` (a LokiTokenizer): same
        vocabulary size, and the same vocab_hash when its recorded tokenizer can be loaded."""
        model = self.load()
        if model.config.vocab_size != student.vocab_size:
            raise LokiError(f"Loki teacher {self.checkpoint} has vocab_size "
                            f"{model.config.vocab_size}, the student tokenizer {student.vocab_size}"
                            ": a Loki teacher must be trained with the student's tokenizer")
        spec = (self.hparams or {}).get("tokenizer")
        if spec:
            from loki.tokenizer import LokiTokenizer

            try:
                theirs = LokiTokenizer.from_spec(spec).vocab_hash
            except LokiError:
                return  # recorded path not on this machine: the size check above stands
            if theirs != student.vocab_hash:
                raise LokiError(f"Loki teacher {self.checkpoint} was trained with tokenizer "
                                f"{spec} (vocab_hash {theirs}), the student uses "
                                f"{student.vocab_hash}; retrain the teacher or rebuild the data")

    def generate(self, prompts: list[str], prompt_ids: list[list[int]],
                 seed: int) -> list[Generation]:
        out: list[Generation] = []
        for start in range(0, len(prompt_ids), self.batch_size):
            out += self.generate_ids(prompt_ids[start:start + self.batch_size], seed + start)
        return out

    def generate_ids(self, prompt_ids: list[list[int]], seed: int) -> list[Generation]:
        import torch

        model = self.load()
        s = self.sampling
        lengths = {len(p) for p in prompt_ids}
        if len(lengths) != 1:
            raise LokiError("LokiTeacher needs prompts of one length (the cache's prompt_tokens)")
        idx = torch.tensor(prompt_ids, dtype=torch.long, device=self.device)  # (B, Lp)
        g = torch.Generator(device=self.device).manual_seed(seed)
        stop = [[self.eot_id]] if self.eot_id is not None else None
        seqs = model.generate(idx, s.max_new_tokens, temperature=s.temperature, top_k=s.top_k,
                              top_p=s.top_p, stop=stop, generator=g)  # (B, Lp + n)
        Lp = idx.size(1)
        gens = []
        top = None
        if self.top_logprobs:
            with torch.no_grad():
                logits, _ = model(seqs[:, :-1])  # (B, Lp + n - 1, V)
                top = torch.log_softmax(logits[:, Lp - 1:].float(), -1).topk(self.top_logprobs)
        for b in range(seqs.size(0)):
            ids = seqs[b, Lp:].tolist()
            if self.eot_id is not None and self.eot_id in ids:
                ids = ids[: ids.index(self.eot_id)]
            gen = Generation(token_ids=ids)
            if top is not None:
                gen.top_ids = top.indices[b, : len(ids)].tolist()
                gen.top_logprobs = top.values[b, : len(ids)].tolist()
            gens.append(gen)
        return gens

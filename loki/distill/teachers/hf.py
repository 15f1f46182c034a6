"""``HFTeacher``: a transformers causal LM (local folder or hub id).

Batched sampling with vLLM when it is installed and a GPU is present, ``generate`` otherwise.
Its own tokenizer: the builder re-tokenizes the text with the student's. torch, transformers
and vLLM are imported on use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from loki._optional import available, require
from loki.distill.teachers.base import Generation, Sampling


@dataclass
class HFTeacher:
    """A transformers causal LM continuing the prompt text."""

    model: str
    """Local folder or hub id (hub ids need the network or a filled HF_HOME cache)."""
    name: str = ""
    """Source name in the cache (default: the folder or id's last part)."""
    sampling: Sampling = field(default_factory=Sampling)
    """Sampling parameters."""
    device: str = "cpu"
    """torch device ("cpu", "cuda", "cuda:1")."""
    dtype: str = "bfloat16"
    """Weights dtype: bfloat16, float16, float32, or auto: bfloat16 on a GPU or on a CPU with
    native bf16 matmuls (AMX or AVX512-BF16; see loki/cpu.py), float32 on other CPUs."""
    batch_size: int = 8
    """Prompts per generate call."""
    backend: Literal["auto", "transformers", "vllm"] = "auto"
    """auto: vLLM when installed and a GPU is present, else transformers."""
    top_logprobs: int = 0
    """Record the top-k next-token log-probabilities (as token strings) for soft targets."""
    shares_student_vocab: bool = False

    def __post_init__(self) -> None:
        self.name = self.name or self.model.rstrip("/").rsplit("/", 1)[-1]
        self._model = self._tok = self._llm = None
        if self.dtype == "auto":  # resolved here, so the cache manifest records what ran
            from loki.cpu import native_bf16

            self.dtype = ("bfloat16" if not self.device.startswith("cpu") or native_bf16()
                          else "float32")

    def identity(self) -> dict[str, Any]:
        return {"kind": "hf", "model": self.model, "dtype": self.dtype,
                "backend": self._backend(), "sampling": asdict(self.sampling)}

    def _backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        import torch

        return "vllm" if available("vllm") and torch.cuda.is_available() else "transformers"

    def _load(self) -> None:
        torch = require("torch", "distill")
        transformers = require("transformers", "distill")
        self._tok = transformers.AutoTokenizer.from_pretrained(self.model)
        self._tok.padding_side = "left"  # batched sampling continues every row from its end
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        self._model = transformers.AutoModelForCausalLM.from_pretrained(
            self.model, dtype=getattr(torch, self.dtype)).to(self.device).eval()

    def generate(self, prompts: list[str], prompt_ids: list[list[int]],
                 seed: int) -> list[Generation]:
        if self._backend() == "vllm":
            return self._generate_vllm(prompts, seed)
        if self._model is None:
            self._load()
        out: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            out += self._generate_batch(prompts[start:start + self.batch_size], seed + start)
        return out

    def _generate_batch(self, prompts: list[str], seed: int) -> list[Generation]:
        import torch

        s = self.sampling
        enc = self._tok(prompts, return_tensors="pt", padding=True).to(self.device)
        torch.manual_seed(seed)
        kwargs: dict[str, Any] = dict(max_new_tokens=s.max_new_tokens,
                                      pad_token_id=self._tok.pad_token_id)
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p,
                          top_k=s.top_k or 0)
        else:
            kwargs.update(do_sample=False)
        if self.top_logprobs:
            kwargs.update(output_scores=True, return_dict_in_generate=True)
        with torch.no_grad():
            res = self._model.generate(**enc, **kwargs)
        seqs = res.sequences if self.top_logprobs else res
        new = seqs[:, enc["input_ids"].shape[1]:]  # (B, n)
        gens = []
        for b in range(len(prompts)):
            ids = new[b].tolist()
            if self._tok.eos_token_id in ids:
                ids = ids[: ids.index(self._tok.eos_token_id)]
            gen = Generation(text=self._tok.decode(ids, skip_special_tokens=True))
            if self.top_logprobs:
                # scores are the processed (temperature/top-p) logits; log-softmax of step i
                steps = [torch.log_softmax(sc[b].float(), -1).topk(self.top_logprobs)
                         for sc in res.scores[: len(ids)]]
                gen.tokens = [self._tok.decode([t]) for t in ids]
                gen.top_tokens = [[self._tok.decode([t]) for t in st.indices.tolist()]
                                  for st in steps]
                gen.top_logprobs = [st.values.tolist() for st in steps]
            gens.append(gen)
        return gens

    def _generate_vllm(self, prompts: list[str], seed: int) -> list[Generation]:
        vllm = require("vllm", "gpu")
        if self._llm is None:
            self._llm = vllm.LLM(model=self.model, dtype=self.dtype, seed=seed)
        s = self.sampling
        params = [vllm.SamplingParams(
            n=1, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or -1,
            max_tokens=s.max_new_tokens, seed=seed + i, logprobs=self.top_logprobs or None)
            for i in range(len(prompts))]
        outs = self._llm.generate(prompts, params, use_tqdm=False)
        gens = []
        for o in outs:
            c = o.outputs[0]
            gen = Generation(text=c.text)
            if self.top_logprobs and c.logprobs:
                ranked = [sorted(d.values(), key=lambda lp: lp.rank or 0) for d in c.logprobs]
                gen.top_tokens = [[lp.decoded_token for lp in r] for r in ranked]
                gen.top_logprobs = [[lp.logprob for lp in r] for r in ranked]
            gens.append(gen)
        return gens

"""Teachers: anything that continues a prompt. One protocol, three kinds.

- ``HFTeacher``: a transformers causal LM (local folder or hub id); batched sampling with vLLM
  when it is installed and a GPU is present, ``generate`` otherwise. Its own tokenizer: the
  builder re-tokenizes the text with the student's.
- ``OpenAITeacher``: an OpenAI-compatible chat or completions endpoint (OpenAI, a vLLM or TGI
  server: any ``base_url``). The key comes from an environment variable only and is never
  written (not to the cache, its manifest, logs or error messages); requests in flight at once
  (``concurrency``); timeouts; retries with exponential backoff on 429, 5xx, timeouts, dropped
  connections and malformed answers; a per-run budget in requests and tokens.
- ``LokiTeacher``: a Loki checkpoint trained with the student's tokenizer: it continues the
  student token ids directly and can give exact top-k soft targets.

``generate(prompts, prompt_ids, seed)`` returns one ``Generation`` per prompt. The same call with
the same seed gives the same text (API teachers: as far as the endpoint honours ``seed``).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from loki._optional import available, require
from loki.errors import LokiError


@dataclass
class Sampling:
    """How a teacher samples its continuation (recorded in the cache manifest)."""

    max_new_tokens: int = 48
    """Continuation length in the teacher's tokens (the cache truncates to the student's C)."""
    temperature: float = 0.8
    """Sampling temperature (0: greedy)."""
    top_p: float = 0.95
    """Nucleus sampling mass."""
    top_k: int | None = None
    """Keep only the k most likely tokens (None: no limit)."""


@dataclass
class Generation:
    """One continuation. Soft targets come either as student ids (shared vocabulary) or as token
    strings (API and foreign vocabularies; the builder maps them when they map one-to-one)."""

    text: str | None = None
    token_ids: list[int] | None = None
    top_ids: list[list[int]] | None = None
    tokens: list[str] | None = None
    top_tokens: list[list[str]] | None = None
    top_logprobs: list[list[float]] | None = None


@runtime_checkable
class Teacher(Protocol):
    name: str
    shares_student_vocab: bool

    def identity(self) -> dict[str, Any]:
        """What produced the candidates (model, revision, sampling) for the manifest."""
        ...

    def generate(self, prompts: list[str], prompt_ids: list[list[int]],
                 seed: int) -> list[Generation]:
        ...


# ---------------------------------------------------------------------- Hugging Face
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


# ---------------------------------------------------------------------- OpenAI-compatible API
class _Retry(Exception):
    """A failure worth another try (rate limit, server error, dropped or garbled answer)."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


@dataclass
class OpenAITeacher:
    """An OpenAI-compatible endpoint (OpenAI, vLLM/TGI servers, Azure-style proxies)."""

    model: str
    """Model name sent with each request."""
    name: str = ""
    """Source name in the cache (default: the model name)."""
    sampling: Sampling = field(default_factory=Sampling)
    """Sampling parameters."""
    endpoint: Literal["chat", "completions"] = "chat"
    """chat: /chat/completions with an instruction; completions: /completions with raw text."""
    base_url: str | None = None
    """Base URL (e.g. https://api.openai.com/v1, http://vllm-host:8000/v1); None: read it from
    ``base_url_env``."""
    base_url_env: str = "OPENAI_BASE_URL"
    """Environment variable holding the base URL when ``base_url`` is not set."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the key (unset: no Authorization header, local servers)."""
    instruction: str = ("Continue the following text. Reply with the continuation only, "
                        "without repeating the text.")
    """System message of chat requests."""
    timeout_s: float = 60.0
    """Per-request timeout."""
    max_retries: int = 6
    """Tries after the first before giving up (LokiError)."""
    backoff_s: float = 1.0
    """First wait; doubles per retry (with jitter), capped by ``max_backoff_s``."""
    max_backoff_s: float = 60.0
    """Longest wait between tries (a server's Retry-After is honoured up to this)."""
    top_logprobs: int = 0
    """Ask for the top-k log-probabilities of each generated token (APIs give at most ~20)."""
    concurrency: int = 4
    """Requests in flight at once."""
    max_requests: int | None = None
    """Budget of the whole build in requests, retries included (None: no limit); each of the
    build's tasks gets an equal share. Spent: the task stops with an error; a rerun resumes."""
    max_tokens: int | None = None
    """Budget of the whole build in tokens (the server's ``usage.total_tokens``, else the
    requested ``max_new_tokens``), shared like ``max_requests``."""
    shares_student_vocab: bool = False

    def __post_init__(self) -> None:
        self.name = self.name or self.model
        self._lock = threading.Lock()
        self.spent = {"requests": 0, "tokens": 0}
        self._share = 1

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def share_budget(self, tasks: int) -> None:
        """This process runs one of ``tasks`` build tasks: spend at most its share."""
        self._share = max(1, int(tasks))

    def _limit(self, total: int | None) -> int | None:
        return None if total is None else -(-total // self._share)

    def _charge(self, requests: int = 0, tokens: int = 0) -> None:
        with self._lock:
            self.spent["requests"] += requests
            self.spent["tokens"] += tokens
            for what, total in (("requests", self.max_requests), ("tokens", self.max_tokens)):
                limit = self._limit(total)
                if limit is not None and self.spent[what] > limit:
                    raise LokiError(
                        f"OpenAITeacher {self.name!r}: budget of {total} {what} spent (this "
                        f"task's share: {limit}); raise max_{what} and rerun `loki distill "
                        "build`: finished tasks are kept")

    def identity(self) -> dict[str, Any]:
        return {"kind": "openai", "model": self.model, "endpoint": self.endpoint,
                "base_url": self.base_url, "base_url_env": self.base_url_env,
                "sampling": asdict(self.sampling)}

    def _url(self) -> str:
        base = self.base_url or os.environ.get(self.base_url_env)
        if not base:
            raise LokiError(f"OpenAITeacher {self.name!r}: set base_url, or the base URL in the "
                            f"environment variable {self.base_url_env}")
        path = "chat/completions" if self.endpoint == "chat" else "completions"
        return f"{base.rstrip('/')}/{path}"

    def _body(self, prompt: str, seed: int) -> dict[str, Any]:
        s = self.sampling
        body: dict[str, Any] = {"model": self.model, "max_tokens": s.max_new_tokens,
                                "temperature": s.temperature, "top_p": s.top_p, "seed": seed}
        if self.endpoint == "chat":
            body["messages"] = [{"role": "system", "content": self.instruction},
                                {"role": "user", "content": prompt}]
            if self.top_logprobs:
                body.update(logprobs=True, top_logprobs=self.top_logprobs)
        else:
            body["prompt"] = prompt
            if self.top_logprobs:
                body["logprobs"] = self.top_logprobs
        return body

    def generate(self, prompts: list[str], prompt_ids: list[list[int]],
                 seed: int) -> list[Generation]:
        url = self._url()
        with ThreadPoolExecutor(max(1, self.concurrency)) as pool:
            return list(pool.map(lambda i: self.request(url, prompts[i], seed + i),
                                 range(len(prompts))))

    def request(self, url: str, prompt: str, seed: int) -> Generation:
        """One continuation, retried on 429/5xx/timeouts/garbled answers."""
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(self._body(prompt, seed)).encode()
        last = ""
        for attempt in range(self.max_retries + 1):
            self._charge(requests=1)
            try:
                gen, used = self._once(url, data, headers)
                self._charge(tokens=used or self.sampling.max_new_tokens)
                return gen
            except _Retry as err:
                last = str(err)
                if attempt == self.max_retries:
                    break
                wait = min(self.max_backoff_s, self.backoff_s * 2**attempt)
                wait = min(self.max_backoff_s, err.wait) if err.wait is not None else wait
                time.sleep(wait * (1 + 0.25 * random.random()))
        raise LokiError(f"OpenAITeacher {self.name!r}: gave up after {self.max_retries + 1} "
                        f"tries at {url}: {last}")

    def _once(self, url: str, data: bytes, headers: dict[str, str],
              ) -> tuple[Generation, int | None]:
        """One request: (generation, tokens the server says it used)."""
        req = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            if err.code == 429 or err.code >= 500:
                retry_after = err.headers.get("Retry-After") if err.headers else None
                wait = float(retry_after) if retry_after and retry_after.isdigit() else None
                raise _Retry(f"HTTP {err.code}", wait) from err
            detail = err.read()[:200].decode(errors="replace")
            raise LokiError(f"OpenAITeacher {self.name!r}: HTTP {err.code} from {url}: "
                            f"{detail}") from err
        except (urllib.error.URLError, TimeoutError, ConnectionError,
                http.client.HTTPException) as err:
            raise _Retry(f"connection: {err}") from err
        try:
            answer = json.loads(raw)
            usage = answer.get("usage") or {}
            used = usage.get("total_tokens")
            return self._parse(answer), int(used) if isinstance(used, int | float) else None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError,
                AttributeError) as err:
            raise _Retry(f"malformed answer ({type(err).__name__}): {raw[:80]!r}") from err

    def _parse(self, answer: dict) -> Generation:
        choice = answer["choices"][0]
        if self.endpoint == "chat":
            gen = Generation(text=choice["message"]["content"])
            content = (choice.get("logprobs") or {}).get("content") if self.top_logprobs else None
            if content:
                gen.tokens = [t["token"] for t in content]
                gen.top_tokens = [[c["token"] for c in t["top_logprobs"]] for t in content]
                gen.top_logprobs = [[c["logprob"] for c in t["top_logprobs"]] for t in content]
            return gen
        gen = Generation(text=choice["text"])
        lp = choice.get("logprobs") if self.top_logprobs else None
        if lp and lp.get("top_logprobs"):
            gen.tokens = list(lp["tokens"])
            gen.top_tokens = [list(d) for d in lp["top_logprobs"]]
            gen.top_logprobs = [list(d.values()) for d in lp["top_logprobs"]]
        if not isinstance(gen.text, str):
            raise TypeError("text is not a string")
        return gen


# ---------------------------------------------------------------------- Loki checkpoint
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

"""``OpenAITeacher``: an OpenAI-compatible chat or completions endpoint (OpenAI, a vLLM or TGI
server: any ``base_url``).

The key comes from an environment variable only and is never written (not to the cache, its
manifest, logs or error messages); requests in flight at once (``concurrency``); timeouts;
retries with exponential backoff on 429, 5xx, timeouts, dropped connections and malformed
answers; a per-run budget in requests and tokens.
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
from typing import Any, Literal

from loki.distill.teachers.base import Generation, Sampling
from loki.errors import LokiError


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

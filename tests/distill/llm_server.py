"""A small OpenAI-compatible server on the loopback, with faults, for teacher and build tests.

It answers ``POST /v1/completions`` and ``/v1/chat/completions`` (text, ``logprobs``, ``usage``)
when the bearer key matches (``answer`` chooses the text per prompt), and misbehaves: the first requests go through each fault in turn
(429 with Retry-After, 500, a hang past the client's timeout, malformed JSON), later ones at
random with probability ``fault_rate``. ``gate_after``: once that many distinct prompts were
answered, every request hangs until ``release()`` (a build can be killed there, mid-task).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("429", "500", "hang", "malformed")
ANSWER = " and so the story goes on."


class FaultyLLM:
    def __init__(self, key: str, fault_rate: float = 0.2, hang_s: float = 1.0,
                 gate_after: int | None = None, seed: int = 0,
                 answer: Callable[[str, int], str] | None = None) -> None:
        self.key, self.fault_rate, self.hang_s = key, fault_rate, hang_s
        self.answer = answer  # (prompt, answers already sent for it) -> text
        self.gate_after = gate_after
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = 0
        self.faults: Counter = Counter()
        self.answered: Counter = Counter()  # prompt text -> answers sent
        self.gated = 0
        self.open_gate = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def release(self) -> None:
        self.gate_after = None
        self.open_gate.set()

    def close(self) -> None:
        self.open_gate.set()
        self.server.shutdown()
        self.server.server_close()

    def _decide(self, prompt: str) -> str:
        with self.lock:
            self.requests += 1
            if self.gate_after is not None and len(self.answered) >= self.gate_after \
                    and prompt not in self.answered:
                self.gated += 1
                return "gate"
            if self.requests <= len(FAULTS):
                fault = FAULTS[self.requests - 1]
            elif self.rng.random() < self.fault_rate:
                fault = self.rng.choice(FAULTS)
            else:
                self.answered[prompt] += 1
                return "ok" if self.answer is None else self.answer(prompt,
                                                                   self.answered[prompt] - 1)
            self.faults[fault] += 1
            return fault

    def _handler(self):
        llm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("Authorization") != f"Bearer {llm.key}":
                    return self._send(401, b'{"error": "bad key"}')
                chat = self.path.endswith("/chat/completions")
                prompt = body["messages"][-1]["content"] if chat else body["prompt"]
                what = llm._decide(prompt)
                if what == "gate":  # no answer: the client times out and retries
                    llm.open_gate.wait(llm.hang_s)
                    return None
                if what == "hang":
                    time.sleep(llm.hang_s)
                    return None
                if what == "429":
                    return self._send(429, b'{"error": "rate limited"}', {"Retry-After": "0"})
                if what == "500":
                    return self._send(500, b"internal error")
                text = ANSWER if what in ("ok", "malformed") else what
                answer = {"choices": [{"message": {"role": "assistant", "content": text}}
                                      if chat else {"text": text}],
                          "usage": {"total_tokens": 7}}
                payload = json.dumps(answer).encode()
                if what == "malformed":
                    payload = payload[: len(payload) // 2]
                return self._send(200, payload)

            def _send(self, code: int, payload: bytes, headers: dict | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        return Handler

"""Teachers: the OpenAI-compatible client against a real local HTTP server; the Loki teacher."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loki.distill.teachers import LokiTeacher, OpenAITeacher, Sampling
from loki.errors import LokiError

GOOD_CHAT = {"choices": [{"message": {"role": "assistant", "content": " a fine answer"},
                          "logprobs": {"content": [
                              {"token": " a", "logprob": -0.1,
                               "top_logprobs": [{"token": " a", "logprob": -0.1},
                                                {"token": " the", "logprob": -2.5}]}]}}]}


class Script:
    """The server's answers in turn, and the requests it received."""

    def __init__(self, answers: list[tuple[int, bytes]]) -> None:
        self.answers, self.requests = list(answers), []


def _server(script: Script):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            script.requests.append((self.path, dict(self.headers), json.loads(body)))
            code, payload = script.answers.pop(0) if script.answers else (200, b"{}")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def endpoint(monkeypatch):
    servers = []

    def start(answers):
        script = Script(answers)
        server = _server(script)
        servers.append(server)
        monkeypatch.setenv("TEST_LLM_URL", f"http://127.0.0.1:{server.server_port}/v1")
        monkeypatch.setenv("TEST_LLM_KEY", "sk-test")
        return script

    yield start
    for s in servers:
        s.shutdown()


def _teacher(**kw) -> OpenAITeacher:
    return OpenAITeacher(model="gpt-test", base_url_env="TEST_LLM_URL", api_key_env="TEST_LLM_KEY",
                         backoff_s=0.01, max_backoff_s=0.05, timeout_s=5, concurrency=1, **kw)


def test_retries_429_500_and_malformed_then_answers(endpoint):
    script = endpoint([(429, b'{"error": "slow down"}'), (500, b"oops"),
                       (200, b'{"choices": [{"message": '),  # cut off mid-JSON
                       (200, b'{"choices": []}'),  # valid JSON, no answer
                       (200, json.dumps(GOOD_CHAT).encode())])
    teacher = _teacher(top_logprobs=2, sampling=Sampling(max_new_tokens=7, temperature=0.5))
    [gen] = teacher.generate(["Once upon a time"], [[1, 2]], seed=11)
    assert gen.text == " a fine answer"
    assert gen.tokens == [" a"] and gen.top_tokens == [[" a", " the"]]
    assert gen.top_logprobs == [[-0.1, -2.5]]
    assert len(script.requests) == 5
    path, headers, body = script.requests[-1]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test"
    assert body["seed"] == 11 and body["max_tokens"] == 7 and body["top_logprobs"] == 2
    assert body["messages"][-1] == {"role": "user", "content": "Once upon a time"}


def test_completions_endpoint_and_seeds_per_prompt(endpoint):
    good = {"choices": [{"text": " more text"}]}
    script = endpoint([(200, json.dumps(good).encode())] * 2)
    gens = _teacher(endpoint="completions").generate(["a", "b"], [[], []], seed=5)
    assert [g.text for g in gens] == [" more text"] * 2
    assert sorted(r[2]["seed"] for r in script.requests) == [5, 6]
    assert all(r[0] == "/v1/completions" and "prompt" in r[2] for r in script.requests)


def test_gives_up_after_max_retries_and_4xx_is_not_retried(endpoint):
    script = endpoint([(503, b"")] * 3)
    with pytest.raises(LokiError, match="gave up after 3 tries.*HTTP 503"):
        _teacher(max_retries=2).generate(["x"], [[]], seed=0)
    assert len(script.requests) == 3
    script = endpoint([(401, b'{"error": "bad key"}')])
    with pytest.raises(LokiError, match="HTTP 401.*bad key"):
        _teacher().generate(["x"], [[]], seed=0)
    assert len(script.requests) == 1


def test_base_url_only_from_the_environment(monkeypatch):
    monkeypatch.delenv("NOPE_URL", raising=False)
    with pytest.raises(LokiError, match="NOPE_URL"):
        OpenAITeacher(model="m", base_url_env="NOPE_URL").generate(["x"], [[]], 0)


def test_loki_teacher_is_seeded_and_stops_at_eot(loki_ckpt, student):
    tok, _ = student
    teacher = LokiTeacher(loki_ckpt, sampling=Sampling(max_new_tokens=5, temperature=1.0),
                          top_logprobs=2)
    prompts = [tok.encode("def main(argv):")[:4]] * 3
    a = teacher.generate([], prompts, seed=3)
    b = teacher.generate([], prompts, seed=3)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert all(len(g.top_ids) == len(g.token_ids) and len(g.top_ids[0]) == 2 for g in a)
    teacher.eot_id = a[0].token_ids[0]  # pretend the first sampled token ends the text
    assert teacher.generate([], prompts[:1], seed=3)[0].token_ids == []
    assert teacher.name == Path(loki_ckpt).stem


def test_budget_in_requests_and_tokens_stops_the_run(endpoint):
    good = json.dumps({**GOOD_CHAT, "usage": {"total_tokens": 30}}).encode()
    endpoint([(429, b"{}"), (500, b"{}"), (200, good)])
    teacher = _teacher(max_requests=2)  # retries count: the third try is over budget
    with pytest.raises(LokiError, match="budget of 2 requests spent"):
        teacher.generate(["x"], [[1]], seed=0)
    endpoint([(200, good)] * 4)
    teacher = _teacher(max_tokens=100)
    teacher.share_budget(2)  # one of two build tasks: 50 tokens for this one
    teacher.generate(["a"], [[1]], seed=0)
    assert teacher.spent == {"requests": 1, "tokens": 30}
    with pytest.raises(LokiError, match="budget of 100 tokens spent"):
        teacher.generate(["b"], [[1]], seed=0)

"""The openai engine against a local chat-completions server that fails on purpose.

The server (stdlib ``http.server`` on 127.0.0.1, one per test, stopped by the fixture)
answers like an OpenAI-compatible server, records every request, counts the requests in
flight, and obeys directives written in the last user message:

``429xK`` / ``500xK`` / ``slowxK`` / ``badjsonxK``: the first K attempts of this prompt get a
429 (with ``Retry-After``), a 500, an answer later than the client's timeout, or a 200 whose
body is not JSON; ``e400``: a plain 400; ``ctx``: a 400 saying the context is exceeded;
``e401``: a 401. It refuses to serve more than ``MAX_REQUESTS`` requests (410, not retried),
so a wrong retry loop cannot run away.
"""
from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from udfs.llm.base import FatalEngineError, Sampling
from udfs.llm.openai_engine import OpenAIEngine
from udfs.llm.selfscore import yes_no_score
from udfs.llm.truncate import CUT

MAX_REQUESTS = 400
SLOW_S = 1.5
DIRECTIVE = re.compile(r"\b(429|500|slow|badjson)x(\d+)\b")


def reply_text(prompt: str, i: int) -> str:
    return f"reply {i} to {prompt[-24:]}"


class ChatServer:
    def __init__(self, delay_s: float = 0.0, retry_after: str = "0"):
        self.delay_s = delay_s
        self.retry_after = retry_after
        self.requests: list[tuple[dict, dict]] = []
        self.attempts: Counter = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> "ChatServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output quiet
                pass

            def _send(self, status: int, payload, headers=None):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                with server.lock:
                    server.requests.append((dict(self.headers), body))
                    server.attempts[prompt] += 1
                    server.times[prompt].append(time.monotonic())
                    attempt = server.attempts[prompt]
                    too_many = len(server.requests) > MAX_REQUESTS
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if too_many:
                        return self._send(410, {"error": {"message": "test server request budget spent"}})
                    self._answer(body, prompt, attempt)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _answer(self, body, prompt, attempt):
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if "e401" in prompt:
                    return self._send(401, {"error": {"message": "invalid api key"}})
                if "e400" in prompt:
                    return self._send(400, {"error": {"message": "temperature must be a number"}})
                if "ctx" in prompt:
                    msg = "This model's maximum context length is 2048 tokens."
                    return self._send(400, {"error": {"message": msg}})
                m = DIRECTIVE.search(prompt)
                if m and attempt <= int(m.group(2)):
                    kind = m.group(1)
                    if kind == "429":
                        return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": server.retry_after})
                    if kind == "500":
                        return self._send(500, {"error": {"message": "boom"}})
                    if kind == "badjson":
                        return self._send(200, b'{"choices": [{"message": ')
                    time.sleep(SLOW_S)
                if server.delay_s:
                    time.sleep(server.delay_s)
                self._send(200, self._completion(body, prompt))

            def _completion(self, body, prompt):
                choices, total = [], 0
                for i in range(body.get("n", 1)):
                    text = reply_text(prompt, i)
                    words = text.split()[: body["max_tokens"]]
                    total += len(words)
                    choice = {"index": i, "message": {"role": "assistant", "content": " ".join(words)},
                              "finish_reason": "length" if len(words) < len(text.split()) else "stop"}
                    if body.get("logprobs"):
                        tops = [{"token": "Yes", "logprob": -0.1}, {"token": "No", "logprob": -2.3},
                                {"token": " yes", "logprob": -4.0}][: body.get("top_logprobs", 0)]
                        choice["logprobs"] = {"content": [
                            {"token": w, "logprob": -0.5, "top_logprobs": tops if j == 0 else []}
                            for j, w in enumerate(words)]}
                    choices.append(choice)
                prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
                return {"id": "x", "object": "chat.completion", "model": body["model"],
                        "choices": choices[::-1],  # out of order on purpose: the engine sorts by index
                        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": total,
                                  "total_tokens": prompt_tokens + total}}

        return Handler


@pytest.fixture()
def server():
    s = ChatServer().start()
    yield s
    s.stop()


def make_engine(server, **kw):
    cfg = {"engine": "openai", "model": "served-model", "label": "srv", "base_url": server.base_url,
           "max_concurrency": 4, "max_retries": 3, "request_timeout_s": 0.5, "max_model_len": 2048,
           "engine_kwargs": {"backoff_base_s": 0.01, "backoff_max_s": 0.05}}
    engine_kwargs = kw.pop("engine_kwargs", {})
    cfg.update(kw)
    cfg["engine_kwargs"] = {**cfg["engine_kwargs"], **engine_kwargs}
    return OpenAIEngine(cfg)


def user(text: str) -> list[dict]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def test_request_fields_and_api_key_from_env(server, monkeypatch):
    monkeypatch.setenv("NR_TEST_OPENAI_KEY", "sk-test-123")
    e = make_engine(server, api_key_env="NR_TEST_OPENAI_KEY", engine_kwargs={"extra_body": {"top_k": 20}})
    schema = {"title": "verdict", "type": "object", "properties": {"ok": {"type": "boolean"}}}
    s = Sampling(temperature=0.7, top_p=0.9, max_tokens=33, seed=7, stop=("##",), json_schema=schema)
    [[c]] = e.chat([user("what is 2+2")], [s])
    assert c.text == reply_text("what is 2+2", 0) and c.finish_reason == "stop" and c.error is None
    headers, body = server.requests[0]
    assert headers["Authorization"] == "Bearer sk-test-123"
    assert body == {
        "model": "served-model", "messages": user("what is 2+2"), "temperature": 0.7, "top_p": 0.9,
        "max_tokens": 33, "n": 1, "seed": 7, "stop": ["##"], "top_k": 20,
        "response_format": {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}}}
    assert "sk-test-123" not in repr(e)
    e.close()


def test_missing_key_variable_is_fatal_and_named(server, monkeypatch):
    monkeypatch.delenv("NR_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(FatalEngineError, match="NR_TEST_NO_SUCH_KEY"):
        make_engine(server, api_key_env="NR_TEST_NO_SUCH_KEY")


def test_n_samples_in_index_order_with_token_split(server):
    e = make_engine(server)
    [samples] = e.chat([user("tell me three things")], [Sampling(n=3, temperature=0.8, max_tokens=50)])
    assert [c.text for c in samples] == [reply_text("tell me three things", i) for i in range(3)]
    _, body = server.requests[0]
    assert body["n"] == 3 and len(server.requests) == 1
    assert {c.prompt_tokens for c in samples} == {6}  # the prompt's length on every sample
    assert sum(c.completion_tokens for c in samples) == 3 * len(reply_text("tell me three things", 0).split())
    e.close()


def test_first_token_logprobs_and_exact_token_counts(server):
    e = make_engine(server)
    [samples] = e.chat([user("Is it? Yes or No")], [Sampling(max_tokens=2, n=2, logprobs=3)])
    _, body = server.requests[0]
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    for c in samples:
        assert c.first_token_logprobs == {"Yes": -0.1, "No": -2.3, " yes": -4.0}
        assert c.completion_tokens == 2 and c.finish_reason == "length"
    assert yes_no_score(samples[0].first_token_logprobs) > 2.0
    e.close()


def test_transient_failures_are_retried_until_success(server):
    e = make_engine(server)
    prompts = ["a 429x2", "b 500x2", "c slowx1", "d badjsonx2", "e fine"]
    out = e.chat([user(p) for p in prompts], [Sampling(max_tokens=50)] * len(prompts))
    for p, [c] in zip(prompts, out):
        assert c.error is None and c.text == reply_text(p, 0), p
    assert {p: server.attempts[p] for p in prompts} == {"a 429x2": 3, "b 500x2": 3, "c slowx1": 2,
                                                        "d badjsonx2": 3, "e fine": 1}
    assert [c.extra["attempts"] for [c] in out] == [3, 3, 2, 3, 1]
    e.close()


def test_retry_after_is_honored():
    srv = ChatServer(retry_after="1").start()
    try:
        e = make_engine(srv, engine_kwargs={"backoff_base_s": 0.001, "backoff_max_s": 0.001})
        [[c]] = e.chat([user("wait 429x1")], [Sampling()])
        assert c.error is None
        first, second = srv.times["wait 429x1"]
        assert second - first >= 0.95, "the client must wait the server's Retry-After, not its own 1 ms backoff"
        e.close()
    finally:
        srv.stop()


def test_exhausted_retries_and_client_errors_fail_only_their_row(server):
    e = make_engine(server, max_retries=2)
    prompts = ["x 500x99", "fine one", "bad e400", "huge ctx", "y slowx99"]
    out = e.chat([user(p) for p in prompts], [Sampling(n=2, max_tokens=50)] * len(prompts))
    assert [len(r) for r in out] == [2] * 5
    down, fine, bad, huge, slow = out
    assert all(c.finish_reason == "error" and "HTTP 500" in c.error and "after 3 attempts" in c.error for c in down)
    assert [c.text for c in fine] == [reply_text("fine one", i) for i in range(2)]
    assert bad[0].finish_reason == "error" and "HTTP 400" in bad[0].error
    assert huge[0].finish_reason == "too_long" and huge[0].error is None
    assert slow[0].finish_reason == "error" and "request_timeout_s" in slow[0].error
    assert server.attempts["x 500x99"] == 3 and server.attempts["y slowx99"] == 3
    assert server.attempts["bad e400"] == 1 and server.attempts["huge ctx"] == 1  # not retried
    e.close()


def test_concurrency_is_bounded():
    srv = ChatServer(delay_s=0.1).start()
    try:
        e = make_engine(srv, max_concurrency=3)
        out = e.chat([user(f"q{i}") for i in range(12)], [Sampling()] * 12)
        assert all(c.error is None for [c] in out)
        assert srv.max_in_flight == 3
        e.close()
    finally:
        srv.stop()


def test_auth_failure_is_fatal(server):
    e = make_engine(server)
    with pytest.raises(FatalEngineError, match="HTTP 401"):
        e.chat([user("fine"), user("key e401"), user("other")], [Sampling()] * 3)
    assert server.attempts["key e401"] == 1
    e.close()


def test_unreachable_server_is_fatal():
    with socket.socket() as s:  # a port nothing listens on once the socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e = OpenAIEngine({"model": "m", "base_url": f"http://127.0.0.1:{port}/v1", "max_retries": 1,
                      "request_timeout_s": 2, "engine_kwargs": {"backoff_base_s": 0.01}})
    with pytest.raises(FatalEngineError, match="cannot be reached"):
        e.chat([user("a"), user("b")], [Sampling()] * 2)
    e.close()


def test_too_long_prompt_is_cut_or_marked_before_sending(server):
    long_doc = "HEAD " + "word " * 2000 + "TAIL"
    e = make_engine(server, max_model_len=400)
    [[c]] = e.chat([user(long_doc)], [Sampling(max_tokens=50)])
    sent = server.requests[-1][1]["messages"][-1]["content"]
    assert c.truncated_prompt and CUT in sent and sent.startswith("HEAD") and sent.endswith("TAIL")
    assert e.count_tokens(user(sent)) <= 400 - 50
    marked = make_engine(server, max_model_len=400, too_long="mark")
    n_before = len(server.requests)
    [[m]] = marked.chat([user(long_doc)], [Sampling(max_tokens=50)])
    assert m.finish_reason == "too_long" and len(server.requests) == n_before
    e.close()
    marked.close()


def test_chat_from_inside_a_running_loop_and_close(server):
    e = make_engine(server)

    async def caller():  # e.g. a notebook: the calling thread already runs a loop
        return e.chat([user("from a loop")], [Sampling()])

    [[c]] = asyncio.run(caller())
    assert c.text == reply_text("from a loop", 0)
    session, thread = e._box[0], e._thread
    e.close()
    assert session.closed and not thread.is_alive()
    [[again]] = e.chat([user("after close")], [Sampling()])  # a closed engine starts a fresh loop
    assert again.error is None
    e.close()


def test_generation_udf_with_openai_engine(spark):
    from jobs.common.config import ModelConfig, SamplingConfig
    from jobs.common.llm import generate, with_prompt
    from udfs.llm.prompts import load_prompt

    srv = ChatServer().start()
    try:
        questions = [f"question {i}" for i in range(30)] + ["flaky 429x1", "broken 500x99"]
        df = spark.createDataFrame([(f"k{i:02d}", q) for i, q in enumerate(questions)], "k string, question string")
        model = ModelConfig(engine="openai", model="served-model", label="srv", base_url=srv.base_url,
                            max_concurrency=4, max_retries=2, request_timeout_s=5,
                            engine_kwargs={"backoff_base_s": 0.01, "backoff_max_s": 0.05})
        out = generate(with_prompt(df, "respond"), key_cols=["k"], model=model,
                       sampling=SamplingConfig(n=2, max_tokens=64))
        rows = {(r.k, r.sample_idx): r for r in out.collect()}
        assert len(rows) == 2 * len(questions)
        prompt = load_prompt("respond")
        for i, q in enumerate(questions[:-1]):
            content = prompt.render({"question": q})[-1]["content"]
            for idx in (0, 1):
                r = rows[(f"k{i:02d}", idx)]
                assert (r.text, r.error, r.model, r.prompt_name) == (reply_text(content, idx), None, "srv", "respond")
                assert r.prompt_hash == prompt.sha and r.prompt_tokens > 0
        broken = rows[("k31", 0)]
        assert broken.finish_reason == "error" and "HTTP 500" in broken.error
    finally:
        srv.stop()


def test_openai_model_without_base_url_fails_before_any_task(spark):
    from jobs.common.config import ModelConfig, SamplingConfig
    from jobs.common.llm import generate, with_prompt

    df = spark.createDataFrame([("a", "q")], "k string, question string")
    with pytest.raises(ValueError, match="base_url"):
        generate(with_prompt(df, "respond"), key_cols=["k"], model=ModelConfig(engine="openai", model="m"),
                 sampling=SamplingConfig())


def test_server_ignoring_n_gives_error_samples_for_the_missing_ones():
    from udfs.llm.openai_engine import completions_from_response

    data = {"choices": [{"index": 0, "message": {"content": "only one"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    got = completions_from_response(data, Sampling(n=3))
    assert [c.finish_reason for c in got] == ["stop", "error", "error"]
    assert got[0].completion_tokens == 2 and "1 of 3" in got[2].error


def test_engine_used_before_a_fork_works_in_the_child(server):
    import multiprocessing

    e = make_engine(server)
    [[before]] = e.chat([user("parent")], [Sampling()])
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()

    def child():
        [[c]] = e.chat([user("child")], [Sampling()])
        q.put((c.text, c.error))
        e.close()

    p = ctx.Process(target=child)
    p.start()
    got = q.get(timeout=30)
    p.join(timeout=30)
    assert before.error is None and got == (reply_text("child", 0), None) and p.exitcode == 0
    [[after]] = e.chat([user("parent again")], [Sampling()])  # the parent's loop is untouched
    assert after.error is None
    e.close()


def test_api_key_never_reaches_the_logs_or_errors(server, monkeypatch, caplog):
    monkeypatch.setenv("NR_TEST_OPENAI_KEY", "sk-secret-456")
    e = make_engine(server, api_key_env="NR_TEST_OPENAI_KEY", max_retries=1)
    with caplog.at_level("DEBUG"):
        out = e.chat([user("r 500x1"), user("z 500x9")], [Sampling()] * 2)
        with pytest.raises(FatalEngineError) as fatal:
            e.chat([user("k e401")], [Sampling()])
    assert out[0][0].error is None and "HTTP 500" in out[1][0].error
    assert "retrying" in caplog.text
    assert all("sk-secret-456" not in x for x in (caplog.text, out[1][0].error, str(fatal.value), repr(e)))
    e.close()

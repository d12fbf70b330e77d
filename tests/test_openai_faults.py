"""The openai engine against servers that misbehave at the HTTP and TCP level: 408 (retried),
403 (fatal: a bad key fails every row alike), a connection dropped in the middle of the
response body (retried), and a blackholed port that accepts connections and never answers
(each row ends as an error after its retries, within a bounded time, no hang). Every case
runs with a recognisable API key that must not appear in any log line or error.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter

import pytest

from udfs.llm.base import FatalEngineError, Sampling
from udfs.llm.openai_engine import OpenAIEngine

KEY = "sk-nr-test-SECRET-7f3a9c"


class RawServer:
    """A TCP server whose per-connection behaviour is a function of the request's prompt."""

    def __init__(self, behave):
        self.behave = behave
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.attempts: Counter = Counter()
        self.auth: list[str] = []
        self.open: list[socket.socket] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.open.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _read_request(self, conn) -> tuple[dict, dict]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return {}, {}
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line)
        n = int(headers.get("Content-Length", 0))
        while len(body) < n:
            body += conn.recv(65536)
        return headers, json.loads(body)

    def _handle(self, conn):
        try:
            while True:
                headers, body = self._read_request(conn)
                if not body:
                    return
                prompt = body["messages"][-1]["content"]
                self.attempts[prompt] += 1
                self.auth.append(headers.get("Authorization", ""))
                if not self.behave(self, conn, prompt, self.attempts[prompt], body):
                    return
        except OSError:
            return
        finally:
            if not self.stopped.is_set():
                try:
                    conn.close()
                except OSError:
                    pass

    def stop(self):
        self.stopped.set()
        self.sock.close()
        for c in self.open:
            try:
                c.close()
            except OSError:
                pass


def respond(conn, status: int, payload: bytes, reason: str = "X", declared: int | None = None) -> None:
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload) if declared is None else declared}\r\n\r\n").encode()
    conn.sendall(head + payload)


def ok_body(prompt: str) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": f"answer to {prompt}"},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 3}}).encode()


def behaviour(srv, conn, prompt, attempt, body) -> bool:
    """Returns whether the connection stays open for another request."""
    if prompt.startswith("408x") and attempt <= int(prompt[4]):
        respond(conn, 408, b'{"error": {"message": "request timeout"}}', "Request Timeout")
        return True
    if prompt.startswith("403"):
        respond(conn, 403, b'{"error": {"message": "forbidden: key revoked"}}', "Forbidden")
        return True
    if prompt.startswith("dropx") and attempt <= int(prompt[5]):
        full = ok_body(prompt)
        respond(conn, 200, full[: len(full) // 3], "OK", declared=len(full))  # a third, then the line dies
        conn.shutdown(socket.SHUT_RDWR)
        conn.close()
        return False
    if prompt.startswith("hang"):
        time.sleep(30)  # accepted and read, never answered
        return False
    respond(conn, 200, ok_body(prompt), "OK")
    return True


@pytest.fixture()
def srv():
    s = RawServer(behaviour)
    yield s
    s.stop()


def engine(base_url: str, monkeypatch, **kw) -> OpenAIEngine:
    monkeypatch.setenv("NR_TEST_FAULTS_KEY", KEY)
    cfg = {"engine": "openai", "model": "m", "base_url": base_url, "api_key_env": "NR_TEST_FAULTS_KEY",
           "max_concurrency": 4, "max_retries": 2, "request_timeout_s": 1.0,
           "engine_kwargs": {"backoff_base_s": 0.01, "backoff_max_s": 0.05}}
    cfg.update(kw)
    return OpenAIEngine(cfg)


def user(text):
    return [{"role": "user", "content": text}]


def no_key_in(caplog, *texts):
    for t in (caplog.text, *texts):
        assert KEY not in (t or ""), "the API key leaked"


def test_408_is_retried_until_the_answer(srv, monkeypatch, caplog):
    e = engine(srv.base_url, monkeypatch)
    with caplog.at_level("DEBUG"):
        [[a], [b], [c]] = e.chat([user("408x1 a"), user("408x2 b"), user("408x5 c")], [Sampling()] * 3)
    assert (a.error, a.text) == (None, "answer to 408x1 a") and b.error is None
    assert srv.attempts["408x1 a"] == 2 and srv.attempts["408x2 b"] == 3
    assert c.finish_reason == "error" and "HTTP 408" in c.error and srv.attempts["408x5 c"] == 3
    assert all(h == f"Bearer {KEY}" for h in srv.auth)
    no_key_in(caplog, c.error, repr(e))
    e.close()


def test_403_is_fatal_and_not_retried(srv, monkeypatch, caplog):
    e = engine(srv.base_url, monkeypatch)
    with caplog.at_level("DEBUG"), pytest.raises(FatalEngineError, match="HTTP 403") as err:
        e.chat([user("403 x"), user("fine")], [Sampling()] * 2)
    assert srv.attempts["403 x"] == 1
    no_key_in(caplog, str(err.value))
    e.close()


def test_connection_dropped_mid_body_is_retried(srv, monkeypatch, caplog):
    e = engine(srv.base_url, monkeypatch)
    with caplog.at_level("DEBUG"):
        [[a], [b]] = e.chat([user("dropx1 a"), user("dropx9 b")], [Sampling()] * 2)
    assert (a.error, a.text) == (None, "answer to dropx1 a") and srv.attempts["dropx1 a"] == 2
    assert b.finish_reason == "error" and b.error and srv.attempts["dropx9 b"] == 3
    no_key_in(caplog, b.error)
    e.close()


def test_every_request_dropped_mid_body_fails_rows_not_the_task(srv, monkeypatch):
    # the server was reached (it sent headers): that is a transient fault, not a missing server
    e = engine(srv.base_url, monkeypatch)
    out = e.chat([user("dropx9 a"), user("dropx9 b")], [Sampling()] * 2)
    assert all(c.finish_reason == "error" for [c] in out)
    e.close()


def test_blackholed_port_ends_each_row_in_bounded_time(monkeypatch, caplog):
    """A port that accepts connections and never answers: each request times out; after its
    retries the row is an error (not a hang, not a crash), within retries x timeout + backoff."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)  # the kernel completes handshakes; nobody ever reads or answers
    try:
        e = engine(f"http://127.0.0.1:{hole.getsockname()[1]}/v1", monkeypatch, request_timeout_s=0.5, max_retries=1)
        t0 = time.monotonic()
        with caplog.at_level("DEBUG"):
            out = e.chat([user("a"), user("b"), user("c")], [Sampling()] * 3)
        took = time.monotonic() - t0
        assert all(c.finish_reason == "error" and "no answer within request_timeout_s" in c.error for [c] in out)
        assert took < 10, f"a blackholed server held the call for {took:.1f}s"
        no_key_in(caplog, *(c.error for [c] in out))
        e.close()
    finally:
        hole.close()

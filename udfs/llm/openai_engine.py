"""The ``openai`` engine: any OpenAI-compatible chat-completions server (``vllm serve``, a
hosted API, a proxy), called with bounded concurrency and retries.

One ``chat`` call sends one ``POST {base_url}/chat/completions`` per conversation, at most
``max_concurrency`` in flight, from a private asyncio loop that runs in a daemon thread owned
by the engine. The caller's thread only waits, so the engine works the same in a Spark Python
worker, in a plain script and under a notebook that already runs its own loop. The
``aiohttp`` session lives as long as the engine (connections are reused across batches) and
is closed by ``close()`` or at interpreter exit; a forked child builds its own loop and
session instead of touching its parent's.

What happens to a request:

- 200 with a well-formed body: one ``Completion`` per choice, in choice order.
- 408, 409, 429, 5xx, a connection error, a timeout (``request_timeout_s``) or a 200 whose body is not
  the expected JSON: retried up to ``max_retries`` times. The wait is exponential
  (``backoff_base_s * 2**attempt``, capped at ``backoff_max_s``) with jitter (a random
  point in its upper half), or the server's ``Retry-After`` when it sends one (capped at
  ``retry_after_max_s``). No slot is held while waiting. After the last retry the row gets
  ``finish_reason="error"`` and the reason in ``error``; the other rows are unaffected.
- 400 whose message says the context is exceeded: ``finish_reason="too_long"``, no retry.
- 401 / 403: ``FatalEngineError`` (a bad or missing key fails every row alike; Spark retries
  the task and, if it persists, the job stops with the server's message).
- any other 4xx: a per-row error, no retry (the request itself is wrong).
- if every request of a call failed to reach the server at all (connection refused or reset,
  DNS, no TCP connection within 30 s), the server is down: ``FatalEngineError``. Slow
  answers alone never make a call fatal: one slow prompt must not fail the job.

Too-long prompts. The server's tokenizer is not available here, so the prompt is measured
with an approximate count: ``ceil(characters / chars_per_token)`` plus 8 tokens per message
for the chat template, ``chars_per_token`` = 3.0 by default (English BPE averages about 4;
3 errs toward cutting a little more than needed rather than losing the row). Above
``max_model_len - max_tokens`` the shared rule of ``udfs.llm.truncate`` applies (head and
tail of the last user message, or ``too_long`` with ``too_long: mark``). A prompt the
estimate let through but the server still refuses becomes ``too_long`` from the server's 400.

Token counts. ``prompt_tokens`` is the prompt's length (``usage.prompt_tokens``) on every
sample of the row, as the other engines do. With ``n > 1`` the server reports one
``usage.completion_tokens`` for all choices together, so each choice's count is derived:
exact when the choice carries per-token logprobs (the length of ``logprobs.content``) or
finished with ``length`` (it produced ``max_tokens``); the rest of the total is shared among
the other choices in proportion to their text length (largest remainder, at most
``max_tokens`` each). The samples of a row add up to the server's total whenever the
server's numbers are consistent, so token sums in ``runs`` match the server's bill.

``model_cfg`` keys used: ``model`` (the served model name), ``label``, ``base_url``
(e.g. ``http://host:8000/v1``), ``api_key_env`` (the name of the environment variable that
holds the key; the key is sent as ``Authorization: Bearer`` and never logged),
``max_concurrency``, ``max_retries``, ``request_timeout_s``, ``max_model_len``,
``too_long``. ``engine_kwargs``: ``backoff_base_s`` (1.0), ``backoff_max_s`` (30),
``retry_after_max_s`` (120), ``chars_per_token`` (3.0), ``extra_body`` (a dict merged into
every request, for server-specific fields such as vLLM's ``top_k``), ``headers`` (extra
HTTP headers).
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import random
import threading
import time
import weakref
from typing import Any, Optional, Sequence

from udfs.llm.base import Completion, Conversation, FatalEngineError, Sampling, merge_token_logprobs
from udfs.llm.truncate import fit_messages

log = logging.getLogger(__name__)

_FINISH = {"stop": "stop", "length": "length", "tool_calls": "stop", "function_call": "stop", "eos": "stop"}
_CONTEXT_MARKERS = ("maximum context length", "context length", "context_length_exceeded", "too many tokens",
                    "prompt is too long", "input is too long")
_TEMPLATE_TOKENS_PER_MESSAGE = 8
_ERROR_CHARS = 500
# Answers worth another try besides 5xx: request timeout, conflict (a proxy's or a server's
# transient state) and rate limiting.
_RETRY_STATUS = (408, 409, 429)


# --------------------------------------------------------------------------- pure helpers

def request_body(model: str, messages: Conversation, s: Sampling, extra: Optional[dict] = None) -> dict:
    """The JSON body of one chat-completions request.

    >>> b = request_body("m", [{"role": "user", "content": "hi"}], Sampling(max_tokens=8, seed=None))
    >>> b == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.0, "top_p": 1.0,
    ...       "max_tokens": 8, "n": 1}
    True
    >>> b = request_body("m", [], Sampling(temperature=0.7, top_p=0.9, n=4, seed=3, logprobs=5, stop=("##",)))
    >>> {k: b[k] for k in ("n", "seed", "stop", "logprobs", "top_logprobs")}
    {'n': 4, 'seed': 3, 'stop': ['##'], 'logprobs': True, 'top_logprobs': 5}
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.get("role"), "content": m.get("content") or ""} for m in messages],
        "temperature": float(s.temperature),
        "top_p": float(s.top_p),
        "max_tokens": int(s.max_tokens),
        "n": int(s.n),
    }
    if s.seed is not None:
        body["seed"] = int(s.seed)
    if s.stop:
        body["stop"] = list(s.stop)
    if s.logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = int(s.logprobs)
    if s.json_schema:
        name = str(s.json_schema.get("title") or "output")
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": name, "schema": s.json_schema}}
    if extra:
        body.update(extra)
    return body


def approx_tokens(messages: Conversation, chars_per_token: float = 3.0) -> int:
    """Approximate prompt length when the server's tokenizer is not at hand.

    >>> approx_tokens([{"role": "user", "content": "x" * 30}], chars_per_token=3.0)
    18
    """
    return sum(_TEMPLATE_TOKENS_PER_MESSAGE + math.ceil(len(m.get("content") or "") / chars_per_token)
               for m in messages)


def first_token_logprobs(choice: dict) -> Optional[dict[str, float]]:
    """``choices[i].logprobs.content[0].top_logprobs`` as ``{token: logprob}``; two entries
    that are the same text are merged by adding their probabilities.

    >>> first_token_logprobs({"logprobs": {"content": [{"token": "Yes", "logprob": -0.1,
    ...     "top_logprobs": [{"token": "Yes", "logprob": -0.1}, {"token": "No", "logprob": -2.5}]}]}})
    {'Yes': -0.1, 'No': -2.5}
    >>> first_token_logprobs({"logprobs": None}) is None
    True
    """
    content = ((choice.get("logprobs") or {}).get("content")) or []
    if not content:
        return None
    first = content[0] or {}
    tops = first.get("top_logprobs") or []
    if not tops and "token" in first:  # top_logprobs=0: only the sampled token
        tops = [first]
    return merge_token_logprobs((t.get("token"), t.get("logprob")) for t in tops if t.get("token") is not None) or None


def split_completion_tokens(total: int, choices: list[dict], max_tokens: Optional[int] = None) -> list[int]:
    """Share one request's ``usage.completion_tokens`` among its choices (rule in the module doc).

    >>> split_completion_tokens(10, [{"message": {"content": "aaa"}}, {"message": {"content": "a"}}])
    [8, 2]
    >>> split_completion_tokens(7, [{"logprobs": {"content": [{}, {}]}, "message": {"content": "x"}},
    ...                             {"message": {"content": "yy"}}])
    [2, 5]
    >>> split_completion_tokens(5, [{"message": {"content": ""}}, {"message": {"content": ""}}])
    [3, 2]
    >>> split_completion_tokens(24, [{"finish_reason": "length", "message": {"content": "a longer text"}},
    ...                              {"finish_reason": "stop", "message": {"content": "short"}},
    ...                              {"finish_reason": "length", "message": {"content": "mid"}}], max_tokens=8)
    [8, 8, 8]
    """
    counts: list[Optional[int]] = []
    for c in choices:
        lp = (c.get("logprobs") or {}).get("content")
        if isinstance(lp, list):
            counts.append(len(lp))
        elif max_tokens and c.get("finish_reason") == "length":
            counts.append(int(max_tokens))  # stopped by max_tokens: exactly that many
        else:
            counts.append(None)
    known = sum(x for x in counts if x is not None)
    rest = [i for i, x in enumerate(counts) if x is None]
    left = max(0, int(total) - known)
    if rest:
        weights = [len(((choices[i].get("message") or {}).get("content")) or "") for i in rest]
        if sum(weights) == 0:
            weights = [1] * len(rest)
        shares = [left * w / sum(weights) for w in weights]
        floors = [int(x) for x in shares]
        order = sorted(range(len(rest)), key=lambda j: (-(shares[j] - floors[j]), j))
        for j in order[: left - sum(floors)]:
            floors[j] += 1
        for i, v in zip(rest, floors):
            counts[i] = min(v, int(max_tokens)) if max_tokens else v
    return [int(x) for x in counts]


def completions_from_response(data: dict, s: Sampling, truncated: bool = False) -> list[Completion]:
    """A chat-completions response body -> one ``Completion`` per choice, by ``index``."""
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
    usage = data.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    tokens = split_completion_tokens(int(usage.get("completion_tokens") or 0), choices, s.max_tokens)
    out = []
    for c, n_tokens in zip(choices, tokens):
        reason = c.get("finish_reason") or "stop"
        finish = _FINISH.get(reason, "error")
        msg = c.get("message") or {}
        out.append(Completion(
            text=msg.get("content") or "",
            prompt_tokens=prompt_tokens,
            completion_tokens=n_tokens,
            finish_reason=finish,
            first_token_logprobs=first_token_logprobs(c) if s.logprobs else None,
            error=None if finish != "error" else f"server finished the choice with {reason!r}",
            truncated_prompt=truncated,
        ))
    for _ in range(len(out), int(s.n)):  # a server that ignores n: the missing samples are errors
        out.append(Completion("", prompt_tokens, 0, "error",
                              error=f"the server returned {len(choices)} of {s.n} choices"))
    return out


def retry_after_s(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` in seconds: delta-seconds (fractions accepted) or an HTTP date.

    >>> retry_after_s("2"), retry_after_s("0.5"), retry_after_s(None), retry_after_s("soon")
    (2.0, 0.5, None, None)
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_s(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: a random point in the upper half of ``min(cap, base * 2**attempt)``."""
    ceiling = min(cap, base * (2 ** attempt))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def _is_context_error(status: int, text: str) -> bool:
    low = text.lower()
    return status in (400, 413, 422) and any(m in low for m in _CONTEXT_MARKERS)


class _Failure:
    """Why a request gave up; ``unreachable`` when no HTTP answer ever came back."""

    def __init__(self, message: str, unreachable: bool = False, too_long: bool = False, attempts: int = 1):
        self.message = message[:2000]
        self.unreachable = unreachable
        self.too_long = too_long
        self.attempts = attempts


class _Retry(Exception):
    def __init__(self, message: str, retry_after: Optional[float] = None, unreachable: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.unreachable = unreachable


# --------------------------------------------------------------------------- the engine

class OpenAIEngine:
    def __init__(self, model_cfg: dict):
        kw = dict(model_cfg.get("engine_kwargs") or {})
        self.model = model_cfg.get("model")
        self.name = model_cfg.get("label") or self.model
        base_url = model_cfg.get("base_url")
        if not base_url:
            raise ValueError("the openai engine needs base_url (e.g. http://host:8000/v1)")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.max_model_len = int(model_cfg.get("max_model_len") or 2048)
        self.too_long = model_cfg.get("too_long", "truncate")
        self.max_concurrency = int(model_cfg.get("max_concurrency") or 16)
        self.max_retries = int(model_cfg.get("max_retries") if model_cfg.get("max_retries") is not None else 5)
        self.timeout_s = float(model_cfg.get("request_timeout_s") or 120.0)
        # The generation UDF hands each call at least this many conversations, so that every
        # concurrency slot has work (a call waits for its slowest request).
        self.min_batch_size = self.max_concurrency
        self.backoff_base_s = float(kw.get("backoff_base_s", 1.0))
        self.backoff_max_s = float(kw.get("backoff_max_s", 30.0))
        self.retry_after_max_s = float(kw.get("retry_after_max_s", 120.0))
        self.chars_per_token = float(kw.get("chars_per_token", 3.0))
        self.extra_body = dict(kw.get("extra_body") or {})
        headers = {"Content-Type": "application/json", **{str(k): str(v) for k, v in (kw.get("headers") or {}).items()}}
        key_env = model_cfg.get("api_key_env")
        if key_env:
            key = os.environ.get(key_env)
            if not key:
                raise FatalEngineError(
                    f"api_key_env names {key_env!r}, but that environment variable is not set in this worker "
                    f"(on a cluster, pass it with spark.executorEnv.{key_env})")
            headers["Authorization"] = f"Bearer {key}"
        self._headers = headers
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._pid: Optional[int] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._box: list = [None]
        self._finalizer = None

    def __repr__(self) -> str:  # never shows the headers (the key)
        return f"OpenAIEngine(model={self.model!r}, url={self.url!r}, max_concurrency={self.max_concurrency})"

    # -- loop and session ------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None and self._pid == os.getpid() and self._thread.is_alive():
                return self._loop
            # First use, or a fork: the parent's loop thread does not exist in a child, and its
            # session's sockets belong to the parent.
            if self._finalizer is not None:
                self._finalizer.detach()
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="openai-engine-loop", daemon=True)
            thread.start()
            self._box = [None]  # the session, created on the loop by its first request
            self._loop, self._thread, self._pid = loop, thread, os.getpid()
            # Runs on close() or at interpreter exit, whichever comes first.
            self._finalizer = weakref.finalize(self, _shutdown, loop, thread, self._box)
            return loop

    async def _get_session(self):
        import aiohttp

        if self._box[0] is None:
            connector = aiohttp.TCPConnector(limit=self.max_concurrency)
            self._box[0] = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self._box[0]

    def close(self) -> None:
        """Close the HTTP session and stop the loop thread (also done at interpreter exit)."""
        with self._lock:
            if self._finalizer is not None and self._pid == os.getpid():
                self._finalizer()
            self._loop = self._thread = self._finalizer = None

    # -- requests --------------------------------------------------------------------

    def count_tokens(self, messages: Conversation) -> int:
        return approx_tokens(messages, self.chars_per_token)

    async def _post_once(self, session, body: dict, s: Sampling, truncated: bool) -> list[Completion]:
        import aiohttp

        # A TCP connection that takes more than 30 s is a host that is not there (a dropped
        # packet, a firewall): counted as unreachable, unlike a slow answer.
        timeout = aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=min(self.timeout_s, 30.0))
        connect_timeout = getattr(aiohttp, "ConnectionTimeoutError", ())  # aiohttp >= 3.10
        try:
            async with session.post(self.url, json=body, timeout=timeout) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = retry_after_s(resp.headers.get("Retry-After"))
        except connect_timeout as e:
            raise _Retry(f"could not connect within {timeout.sock_connect:g}s ({type(e).__name__})", unreachable=True)
        except asyncio.TimeoutError:
            raise _Retry(f"no answer within request_timeout_s={self.timeout_s:g}")
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            raise _Retry(f"{type(e).__name__}: {e}", unreachable=True)
        except aiohttp.ClientError as e:
            raise _Retry(f"{type(e).__name__}: {e}")
        text = raw.decode("utf-8", errors="replace")
        if status == 200:
            try:
                return completions_from_response(json.loads(text), s, truncated)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise _Retry(f"malformed response ({type(e).__name__}: {e}): {text[:200]!r}")
        detail = f"HTTP {status} from {self.url}: {text[:_ERROR_CHARS]}"
        if status in (401, 403):
            raise FatalEngineError(f"the server refused the credentials ({detail})")
        if status in _RETRY_STATUS or status >= 500:
            raise _Retry(detail, retry_after=retry_after)
        if _is_context_error(status, text):
            raise _GiveUp(_Failure(detail, too_long=True))
        raise _GiveUp(_Failure(detail))

    async def _request(self, sem: asyncio.Semaphore, conv: Conversation, s: Sampling):
        fitted, truncated, too_long = fit_messages(
            list(conv), self.count_tokens, self.max_model_len - s.max_tokens, self.too_long)
        if too_long:
            return _Failure("the prompt does not fit max_model_len (approximate count)", too_long=True, attempts=0)
        body = request_body(self.model, fitted, s, self.extra_body)
        session = await self._get_session()
        for attempt in range(self.max_retries + 1):
            try:
                async with sem:
                    out = await self._post_once(session, body, s, truncated)
                for c in out:
                    c.extra["attempts"] = attempt + 1
                return out
            except _GiveUp as g:
                g.failure.attempts = attempt + 1
                return g.failure
            except _Retry as r:
                if attempt == self.max_retries:
                    log.warning("giving up on a request after %d attempts: %s", attempt + 1, r)
                    return _Failure(f"after {attempt + 1} attempts: {r}", unreachable=r.unreachable,
                                    attempts=attempt + 1)
                if r.retry_after is not None:
                    wait = min(r.retry_after, self.retry_after_max_s)
                else:
                    wait = backoff_s(attempt, self.backoff_base_s, self.backoff_max_s, self._rng)
                log.info("retrying in %.2fs (attempt %d of %d): %s", wait, attempt + 1, self.max_retries + 1, r)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _run(self, conversations: Sequence[Conversation], sampling: Sequence[Sampling]) -> list:
        sem = asyncio.Semaphore(self.max_concurrency)
        tasks = [asyncio.ensure_future(self._request(sem, c, s)) for c, s in zip(conversations, sampling)]
        try:
            return await asyncio.gather(*tasks)
        except BaseException:
            # A fatal error (or cancellation) ends the call: do not leave requests running.
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def chat(self, conversations: Sequence[Conversation], sampling: Sequence[Sampling]) -> list[list[Completion]]:
        if not conversations:
            return []
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(self._run(list(conversations), list(sampling)), loop)
        try:
            results = future.result()
        except BaseException:
            future.cancel()
            raise
        failures = [r for r in results if isinstance(r, _Failure)]
        if failures and len(failures) == len(results) and all(f.unreachable for f in failures):
            raise FatalEngineError(f"the server at {self.url} cannot be reached: {failures[0].message}")
        out = []
        for r, s, conv in zip(results, sampling, conversations):
            if not isinstance(r, _Failure):
                out.append(r)
                continue
            n = max(1, int(s.n))
            if r.too_long:
                out.append([Completion("", self.count_tokens(list(conv)), 0, "too_long",
                                       extra={"detail": r.message}) for _ in range(n)])
            else:
                out.append([Completion("", 0, 0, "error", error=r.message, extra={"attempts": r.attempts})
                            for _ in range(n)])
        return out


class _GiveUp(Exception):
    def __init__(self, failure: _Failure):
        super().__init__(failure.message)
        self.failure = failure


def _shutdown(loop: asyncio.AbstractEventLoop, thread: threading.Thread, box: list) -> None:
    """Close the session on its loop, then stop the loop and its thread (idempotent)."""
    if loop.is_closed() or not thread.is_alive():
        return
    session = box[0]
    box[0] = None
    if session is not None:
        try:
            asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=5)
        except Exception:  # interpreter shutting down, loop already gone: nothing left to leak
            pass
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    if not thread.is_alive():
        loop.close()

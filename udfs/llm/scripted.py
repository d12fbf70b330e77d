"""The scripted engine: deterministic, prompt-aware canned outputs (tests and dry runs only).

``engine_kwargs``:
  ``script``: ``"echo"`` (built in) or ``"module:function"``, a function
      ``respond(messages, sampling, sample_idx) -> str | dict`` (a dict may carry ``text``,
      ``finish_reason``, ``first_token_logprobs``, ``error``);
  ``fail_on``: a substring of the prompt that makes that row fail (per-row error);
  ``fatal_on``: a substring of the prompt that raises ``FatalEngineError`` (fails the task);
  ``step_error_on``: a substring of the prompt that makes the call raise as a vLLM step does:
      the call's requests stay queued and every later call on this engine spins forever
      (``broken_by`` says so, as ``VLLMEngine.broken_by`` does);
  ``sleep_on``: a substring of the prompt that makes the call sleep ``sleep_s`` seconds
      (default: forever), a call that stopped making progress;
  ``reward``: ``"module:function"``, ``reward(messages) -> float`` for ``ScriptedEngine.reward``
      (default: a hash of the conversation mapped into [-1, 1]).
"""
from __future__ import annotations

import hashlib
import importlib
import time
from typing import Callable, Sequence

from udfs.llm.base import Completion, Conversation, FatalEngineError, Sampling


def echo(messages: list[dict], sampling: Sampling, sample_idx: int) -> str:
    last = messages[-1]["content"] if messages else ""
    digest = hashlib.sha256(f"{last}|{sample_idx}".encode()).hexdigest()[:8]
    return f"echo[{sample_idx}] {digest}: {last[:64]}"


def _load(script: str) -> Callable:
    if script == "echo":
        return echo
    module, _, func = script.partition(":")
    if not func:
        raise ValueError(f"scripted engine: script {script!r} must be 'echo' or 'module:function'")
    return getattr(importlib.import_module(module), func)


def hashed_reward(messages: list[dict]) -> float:
    """A deterministic reward in [-1, 1] from the conversation's text."""
    text = "\n".join(f"{m.get('role')}:{m.get('content', '')}" for m in messages)
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF * 2 - 1


class ScriptedEngine:
    def __init__(self, model_cfg: dict):
        kw = dict(model_cfg.get("engine_kwargs") or {})
        self.name = model_cfg.get("label") or model_cfg.get("model") or "scripted"
        self.max_model_len = int(model_cfg.get("max_model_len") or 2048)
        self.too_long = model_cfg.get("too_long", "truncate")
        self._respond = _load(kw.get("script", "echo"))
        self._fail_on = kw.get("fail_on")
        self._fatal_on = kw.get("fatal_on")
        self._reward = _load(kw["reward"]) if kw.get("reward") else hashed_reward
        self._step_error_on = kw.get("step_error_on")
        self._sleep_on = kw.get("sleep_on")
        self._sleep_s = float(kw.get("sleep_s") or float("inf"))
        self.queued = 0  # requests a failed step left behind
        self.running = 0  # requests of the call under way

    def broken_by(self, error: BaseException) -> bool:
        return self.queued > 0

    def in_flight(self) -> int:
        return self.queued + self.running

    def _stand_in_faults(self, prompts: list[str]) -> None:
        if self.queued:
            while True:  # vLLM's step loop over requests a failed step left: never returns
                time.sleep(0.01)
        if self._step_error_on and any(self._step_error_on in p for p in prompts):
            self.queued = len(prompts)
            raise RuntimeError("scripted failure inside a model step")
        if self._sleep_on and any(self._sleep_on in p for p in prompts):
            end = time.monotonic() + self._sleep_s
            while time.monotonic() < end:
                time.sleep(0.01)

    @staticmethod
    def count_tokens(text: str) -> int:
        return len(text.split())

    def chat(self, conversations: Sequence[Conversation], sampling: Sequence[Sampling]) -> list[list[Completion]]:
        prompts = ["\n".join(m.get("content", "") for m in conv) for conv in conversations]
        self.running = len(conversations)
        try:
            self._stand_in_faults(prompts)
        finally:
            self.running = 0
        out = []
        for conv, prompt, s in zip(conversations, prompts, sampling):
            if self._fatal_on and self._fatal_on in prompt:
                raise FatalEngineError("scripted fatal error")
            n_prompt = self.count_tokens(prompt)
            samples = []
            for idx in range(s.n):
                if n_prompt + s.max_tokens > self.max_model_len and self.too_long == "mark":
                    samples.append(Completion("", n_prompt, 0, "too_long"))
                    continue
                if self._fail_on and self._fail_on in prompt:
                    samples.append(Completion("", n_prompt, 0, "error", error="scripted per-row failure"))
                    continue
                r = self._respond(list(conv), s, idx)
                r = {"text": r} if isinstance(r, str) else dict(r)
                text = r.get("text", "")
                words = text.split()
                finish = r.get("finish_reason", "stop")
                if len(words) > s.max_tokens:
                    text, finish = " ".join(words[: s.max_tokens]), "length"
                samples.append(Completion(
                    text=text, prompt_tokens=n_prompt, completion_tokens=len(text.split()), finish_reason=finish,
                    first_token_logprobs=r.get("first_token_logprobs") if s.logprobs else None, error=r.get("error"),
                ))
            out.append(samples)
        return out

    def reward(self, conversations: Sequence[Conversation]) -> list[float]:
        """One scalar per conversation, as a reward model scores (prompt, response)."""
        out = []
        for conv in conversations:
            prompt = "\n".join(m.get("content", "") for m in conv)
            if self._fatal_on and self._fatal_on in prompt:
                raise FatalEngineError("scripted fatal error")
            out.append(float(self._reward(list(conv))))
        return out

"""A deadline for one engine call: no generation call can hang a task forever.

``deadline(seconds, describe)`` runs its block in the calling thread and starts a watcher
thread. When the block outlives ``seconds``, the watcher raises ``GenerationTimeout`` inside
the calling thread (``PyThreadState_SetAsyncExc``: delivered at the next Python bytecode, which
is where vLLM's scheduler loop spins when a step has broken its state). A call stuck inside
native code for ``GRACE_S`` more seconds cannot be interrupted that way: the watcher prints
the same message to stderr (it reaches the executor's log) and ends the worker process, so
Spark fails the task instead of waiting for it.

Either way the task fails with a message naming the stage, chunk, model and requests in
flight; the engine that timed out is never used again (``udfs.llm.generate``).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from typing import Callable, Iterator, Optional

from pyspark import TaskContext

from udfs.llm.base import FatalEngineError

# After the in-thread exception, how long the call may take to unwind before the process ends.
GRACE_S = 60.0
# The exit status of a worker ended by the watchdog (EX_SOFTWARE).
EXIT_STATUS = 70

# The default deadline of one engine call: a fixed allowance (an engine's first call compiles
# and warms up) plus a floor rate per token requested (prompt and completion). 50 tokens/s for a
# whole call is far below any engine's batched speed (SmolLM2 on 2 CPU cores: over 1,000), so
# the default only fires on a call that has stopped making progress.
BASE_S = 600.0
SECONDS_PER_TOKEN = 0.02
CHARS_PER_TOKEN = 3

# Spark local properties the driver's chunk runner sets (jobs.common.chunks), read by a task to
# name its stage and chunk in errors.
NR_STAGE_PROPERTY = "nr.stage"
NR_CHUNK_PROPERTY = "nr.chunk"


class GenerationTimeout(FatalEngineError):
    """An engine call outlived its deadline: the task fails and a re-run resumes."""


def default_timeout_s(prompt_chars: int, completion_tokens: int) -> float:
    """The deadline of a call whose prompts have ``prompt_chars`` characters in all and that
    asks for ``completion_tokens`` (max_tokens x n, summed over its requests).

    >>> default_timeout_s(0, 0)
    600.0
    >>> default_timeout_s(300_000, 10_000)  # 100 documents of 3,000 characters, 100 tokens each
    2800.0
    """
    return BASE_S + SECONDS_PER_TOKEN * (prompt_chars / CHARS_PER_TOKEN + completion_tokens)


def _raise_in(thread_id: int, exc: Optional[type]) -> None:
    """Schedule ``exc`` in thread ``thread_id`` (None clears a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc) if exc is not None else ctypes.c_void_p(0))


@contextlib.contextmanager
def deadline(seconds: float, describe: Callable[[], str], grace_s: float = GRACE_S,
             on_stuck: Callable[[int], None] = os._exit) -> Iterator[None]:
    """Raise ``GenerationTimeout(describe())`` in this thread when the block runs longer than
    ``seconds``; when it does not unwind within ``grace_s`` after that, print the message and
    call ``on_stuck(EXIT_STATUS)`` (the process ends)."""
    target = threading.get_ident()
    lock = threading.Lock()
    finished = threading.Event()
    unwound = threading.Event()
    state = {"fired": False, "message": ""}

    def watch() -> None:
        if finished.wait(seconds):
            return
        try:
            message = describe()
        except Exception as e:  # the message must not stop the deadline
            message = f"generation call exceeded its deadline ({e!r} while describing it)"
        with lock:
            if finished.is_set():
                return
            state.update(fired=True, message=message)
            _raise_in(target, GenerationTimeout)
        print(f"nr: {message}", file=sys.stderr, flush=True)
        if not unwound.wait(grace_s):
            print(f"nr: the call did not unwind {grace_s:.0f} s after its deadline; ending the worker "
                  f"(exit {EXIT_STATUS}) so that the task fails: {message}", file=sys.stderr, flush=True)
            on_stuck(EXIT_STATUS)

    watcher = threading.Thread(target=watch, name="nr-generation-deadline", daemon=True)
    watcher.start()

    def stop() -> bool:
        while True:
            try:
                with lock:
                    finished.set()
                    if state["fired"]:
                        # The block may have ended before the exception was delivered: clear it
                        # so that it cannot surface later in unrelated code.
                        _raise_in(target, None)
                break
            except GenerationTimeout:  # delivered here, on the way out: the deadline stands
                continue
        unwound.set()
        return state["fired"]

    try:
        yield
    except BaseException as e:
        if stop():  # whatever the interrupted code turned the exception into
            raise GenerationTimeout(state["message"]) from e
        raise
    if stop():
        raise GenerationTimeout(state["message"])


def task_place() -> tuple[str, str]:
    """(stage, chunk) of the running Spark task, from the local properties the driver's chunk
    runner sets (``NR_STAGE_PROPERTY``, ``NR_CHUNK_PROPERTY``); "-" outside a stage."""
    tc = TaskContext.get()
    if tc is None:
        return "-", "-"
    return (tc.getLocalProperty(NR_STAGE_PROPERTY) or "-"), (tc.getLocalProperty(NR_CHUNK_PROPERTY) or "-")

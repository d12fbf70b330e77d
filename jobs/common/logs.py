"""Quiet consoles: our log lines and progress bars on the console, the libraries' chatter in a file.

A local run writes ``<root>/logs/<run id>.log`` with everything (our lines at INFO, every
library's records, and the JVM's own output: Spark's log4j lines and what vLLM, torch and
transformers print inside the Python workers, which the JVM relays). The console gets our
lines, warnings and errors from Python libraries other than the chatty ones, and the error
lines of the JVM's output. ``--log-level debug`` turns all of this off: every record and the
JVM's output go to the console as before.

On a cluster (``spark-submit``, Databricks) the session and its log4j configuration belong to
the platform: nothing here touches them, and a remote storage root gets no log file.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, TextIO

from udfs import fs

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATEFMT = "%H:%M:%S"
OURS = ("nr", "jobs", "udfs", "benchmarks", "py.warnings")
# Libraries whose INFO and WARNING records are chatter: the file gets them, the console only their errors.
CHATTY = ("py4j", "pyspark", "vllm", "torch", "triton", "transformers", "urllib3", "filelock", "httpx", "asyncio",
          "matplotlib", "PIL", "numexpr", "numba", "gguf", "accelerate", "xgrammar", "llguidance", "root")
# A line of the JVM's output that the console shows as well: log4j/vLLM errors and Python tracebacks.
JVM_CONSOLE_LINE = re.compile(r"\b(ERROR|FATAL|CRITICAL)\b|^Traceback |^\w+(Error|Exception): ")


# ``log.info(..., extra=FILE_ONLY)``: a line for the log file, not the console (e.g. each
# chunk's line while a progress bar shows the same progress).
FILE_ONLY = {"console": False}


class ConsoleFilter(logging.Filter):
    """Ours at INFO and up, chatty libraries at ERROR and up, every other library at WARNING and
    up; never a record marked ``FILE_ONLY``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", True) is False:
            return False
        top = record.name.split(".", 1)[0]
        if top in OURS:
            return record.levelno >= logging.INFO
        if top in CHATTY:
            return record.levelno >= logging.ERROR
        return record.levelno >= logging.WARNING


@dataclass
class RunLog:
    """Where this process's full log goes; ``path`` is None when there is no file (debug, remote root)."""

    path: Optional[str] = None
    quiet: bool = False


_current = RunLog()


def current() -> RunLog:
    return _current


def is_debug(level: str) -> bool:
    return str(level).upper() in ("DEBUG", "NOTSET")


def log_path_for(root: str, run_id: str) -> Optional[str]:
    """``<root>/logs/<run id>.log`` for a local root; None for s3://, dbfs:/ and other remote roots."""
    if not fs.is_local(root):
        return None
    return os.path.join(os.path.abspath(os.path.expanduser(root)), "logs", f"{run_id}.log")


def setup(level: str = "INFO", log_file: Optional[str] = None) -> RunLog:
    """Configure the root logger once per process (a notebook or test that configured it keeps its own)."""
    global _current
    root = logging.getLogger()
    if root.handlers:
        return _current
    logging.captureWarnings(True)
    debug = is_debug(level)
    if not debug:
        # pyspark warns when a pandas function is a functools.partial (no type hints to read)
        # and falls back to the eval type it is given: nothing for a user to do.
        warnings.filterwarnings("ignore", message="Cannot infer the eval type from type hints")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    if debug:
        root.setLevel(logging.DEBUG)
        root.addHandler(console)
        _current = RunLog(None, quiet=False)
        return _current
    numeric = logging.getLevelName(str(level).upper())
    root.setLevel(logging.INFO)
    console.addFilter(ConsoleFilter())
    if isinstance(numeric, int) and numeric > logging.INFO:
        console.setLevel(numeric)
    root.addHandler(console)
    if log_file:
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setFormatter(logging.Formatter(FORMAT, DATEFMT))
        root.addHandler(fh)
    _current = RunLog(log_file, quiet=True)
    return _current


def _pump(read_fd: int, log_file: Optional[str], console: TextIO) -> None:
    sink = open(log_file, "a", encoding="utf-8", errors="replace") if log_file else None
    echo_block = False
    with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as pipe:
        for line in pipe:
            if sink is not None:
                sink.write(line)
                sink.flush()
            # A traceback's lines follow its first one; echo until the block ends (an unindented line).
            if JVM_CONSOLE_LINE.search(line):
                echo_block = line.startswith("Traceback ")
                console.write(line)
            elif echo_block and line.startswith((" ", "\t")):
                console.write(line)
            else:
                echo_block = False
    if sink is not None:
        sink.close()


@contextmanager
def jvm_output(run_log: RunLog) -> Iterator[None]:
    """Around the creation of a local SparkSession: the JVM it launches (and the Python workers it
    starts) inherit a pipe as stdout and stderr; a thread copies every line into the run's log
    file and echoes error lines to the console. A no-op when the JVM already runs (tests,
    notebooks, spark-submit, Databricks) or when the run is not quiet."""
    from pyspark.sql import SparkSession

    from jobs.common.spark import _launched_by_spark

    if not run_log.quiet or SparkSession.getActiveSession() is not None or _launched_by_spark():
        yield
        return
    read_fd, write_fd = os.pipe()
    # The console is a copy of the real stderr: while fd 2 points at the pipe, echoing to fd 2
    # would feed the pipe its own lines.
    console = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    # Read from the start: a JVM whose output fills the pipe before anyone reads it would block.
    threading.Thread(target=_pump, args=(read_fd, run_log.path, console), name="nr-jvm-output", daemon=True).start()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(write_fd, 1)
    os.dup2(write_fd, 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, write_fd):
            os.close(fd)


def render_tables(*tables: tuple[str, list[str], list[list[str]]], width: int = 160, title_justify: str = "left") -> str:
    """Plain-text tables (rich, no colour) for ``nr status``, ``nr plan`` and the run summary."""
    import io

    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False, color_system=None)
    for title, header, rows in tables:
        t = Table(title=title, title_justify=title_justify)
        for col in header:
            t.add_column(col, overflow="fold")
        for r in rows:
            t.add_row(*r)
        console.print(t)
    return buf.getvalue()

"""Console vs log file: which records each one gets."""
from __future__ import annotations

import logging

from jobs.common.logs import FILE_ONLY, ConsoleFilter


def _record(name: str, level: int, extra: dict | None = None) -> logging.LogRecord:
    logger = logging.getLogger(name)
    return logger.makeRecord(name, level, __file__, 1, "msg", (), None, extra=extra)


def test_console_filter_levels_and_file_only_lines():
    f = ConsoleFilter()
    assert f.filter(_record("nr", logging.INFO))
    assert not f.filter(_record("nr", logging.DEBUG))
    assert not f.filter(_record("vllm", logging.WARNING)) and f.filter(_record("vllm", logging.ERROR))
    assert not f.filter(_record("boto3", logging.INFO)) and f.filter(_record("boto3", logging.WARNING))
    # a chunk line while a progress bar shows: logged at INFO, so the log file (the root at
    # INFO, no filter) keeps it, but never on the console
    assert not f.filter(_record("nr", logging.INFO, FILE_ONLY))
    assert f.filter(_record("nr", logging.INFO, None))

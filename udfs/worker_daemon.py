"""Spark's Python daemon (``pyspark.daemon``) without two per-task costs of its workers.

Set as ``spark.python.daemon.module`` (local sessions do, ``jobs.common.spark``). Spark
forks every Python worker from this daemon, and each worker, before every task:

1. calls ``importlib.invalidate_caches()``. Spark puts ``pyspark.zip``, py4j's zip and its
   spark-core jar on the workers' ``PYTHONPATH``, and up to Python 3.11 every zip importer
   in ``sys.path_importer_cache`` (one per archive, and one per package imported from it)
   re-reads the whole archive's directory when invalidated: 0.15 s per task for the zips
   alone on an idle core, 43-57% of a generation worker's time in ``bench_stage_scale``.
   The jar holds no Python, and when the same pyspark and py4j versions are importable
   from a plain directory (a pip-installed pyspark, as in local mode) the zips add nothing
   either: both are dropped from ``sys.path`` here, before anything is imported from them;
2. runs ``gc.collect()`` after the task: a full collection over everything the worker holds
   (54 ms with pandas and pyspark loaded; far more with a model's Python objects). The
   modules are imported and ``gc.freeze()``-ed here, before the fork, so every worker's
   collections skip them; ``udfs.llm.engines.get_engine`` freezes an engine the same way.

Anything else is ``pyspark.daemon`` itself.
"""
from __future__ import annotations

import gc
import importlib.machinery
import os
import re
import sys
import zipfile

_VERSION = re.compile(r"""__version__\s*(?::\s*str\s*)?=\s*["']([^"']+)["']""")
_VERSION_FILES = {"pyspark": "pyspark/version.py", "py4j": "py4j/version.py"}


def _zip_version(archive: str, member: str):
    try:
        with zipfile.ZipFile(archive) as z:
            m = _VERSION.search(z.read(member).decode("utf-8"))
    except (OSError, KeyError, zipfile.BadZipFile):
        return None
    return m.group(1) if m else None


def _dir_version(path: list, package: str, member: str):
    spec = importlib.machinery.PathFinder.find_spec(package, path)
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        with open(os.path.join(list(spec.submodule_search_locations)[0], os.path.basename(member)),
                  encoding="utf-8") as f:
            m = _VERSION.search(f.read())
    except OSError:
        return None
    return m.group(1) if m else None


def _holds_python(archive: str) -> bool:
    try:
        with zipfile.ZipFile(archive) as z:
            return any(n.endswith((".py", ".pyc")) for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return True  # not readable here: leave it to the import system


def unzipped_path(path: list) -> list:
    """``path`` without the archives whose importers cost every task a re-read and give
    nothing: a jar without Python files (Spark adds its own spark-core jar, 5,000 classes),
    and the pyspark/py4j zips when each package is importable, at the same version, from a
    directory elsewhere on ``path``."""
    path = [p for p in path if not (p.endswith(".jar") and os.path.isfile(p) and not _holds_python(p))]
    zips = [p for p in path if p.endswith(".zip") and os.path.basename(p).startswith(("pyspark", "py4j"))]
    if not zips:
        return path
    rest = [p for p in path if p not in zips]
    for package, member in _VERSION_FILES.items():
        in_zip = next((v for v in (_zip_version(z, member) for z in zips) if v), None)
        if in_zip is None or _dir_version(rest, package, member) != in_zip:
            return path
    return rest


def main() -> None:
    kept = unzipped_path(sys.path)
    for dropped in set(sys.path) - set(kept):
        # finding this module already made an importer for each path entry, zips included
        sys.path_importer_cache.pop(dropped, None)
    sys.path[:] = kept
    from pyspark import daemon
    import pyspark.worker  # noqa: F401  (what each forked worker runs; imported once, shared)
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    gc.collect()
    gc.freeze()
    daemon.manager()


if __name__ == "__main__":
    main()

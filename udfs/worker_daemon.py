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
_PACKAGES = ("pyspark", "py4j")  # each has <package>/version.py, in its zip and in a directory


def _version(text: str):
    m = _VERSION.search(text)
    return m.group(1) if m else None


def _zip_version(archive: str, package: str):
    try:
        with zipfile.ZipFile(archive) as z:
            return _version(z.read(f"{package}/version.py").decode("utf-8"))
    except (OSError, KeyError, zipfile.BadZipFile):
        return None


def _dir_version(path: list, package: str):
    spec = importlib.machinery.PathFinder.find_spec(package, path)
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        with open(os.path.join(list(spec.submodule_search_locations)[0], "version.py"), encoding="utf-8") as f:
            return _version(f.read())
    except OSError:
        return None


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
    zips = [p for p in path if p.endswith(".zip") and os.path.basename(p).startswith(_PACKAGES)]
    if not zips:
        return path
    rest = [p for p in path if p not in zips]
    for package in _PACKAGES:
        in_zip = next((v for v in (_zip_version(z, package) for z in zips) if v), None)
        if in_zip is None or _dir_version(rest, package) != in_zip:
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

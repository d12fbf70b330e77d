"""Stage attempts that ended without a ``runs`` row (driver killed, node lost, out of memory).

The runner writes its ``runs`` row when a stage ends; a SIGKILLed or lost driver never gets
there, and without more the failed attempt would leave no trace. So a stage run first drops a
small marker ``<storage.root>/_attempts/<run_id>.json`` (stage, start time, host, pid, config
hash) and removes it once its ``runs`` row is written. The next stage run on the same root
turns every marker whose process is gone into a ``runs`` row with status ``interrupted``,
then removes it. A marker of a process still alive on this host is left alone; one from
another host is taken as dead (one driver per ``storage.root`` at a time, as everywhere
else in the pipeline).

Markers go through pyarrow's filesystem (local folders, S3). Where that cannot reach the
root (``dbfs:/``), attempts are not tracked and a debug line says so.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
from typing import Optional

log = logging.getLogger("nr")

FOLDER = "_attempts"
INTERRUPTED = "interrupted"
INTERRUPTED_ERROR = "the driver stopped before recording this run (killed, lost or out of memory)"


def _fs(root: str, options: dict):
    from jobs.common.storage import StorageError, _filesystem, delta_uri

    try:
        fs, base = _filesystem(delta_uri(root), options)
    except StorageError as e:
        log.debug("stage attempts are not tracked under %s: %s", root, e)
        return None, None
    return fs, f"{base}/{FOLDER}"


def _alive(marker: dict) -> bool:
    if marker.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(marker["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def begin(root: str, options: dict, marker: dict) -> Optional[str]:
    """Write the attempt marker; returns its path (None when attempts are not tracked)."""
    fs, folder = _fs(root, options)
    if fs is None:
        return None
    fs.create_dir(folder, recursive=True)
    path = f"{folder}/{marker['run_id']}.json"
    body = {**marker, "host": socket.gethostname(), "pid": os.getpid()}
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(body, default=str).encode())
    return path


def end(root: str, options: dict, path: Optional[str]) -> None:
    if path is None:
        return
    fs, _ = _fs(root, options)
    try:
        fs.delete_file(path)
    except OSError:
        log.warning("could not remove the attempt marker %s", path)


def interrupted_rows(root: str, options: dict) -> tuple[list[dict], list[str]]:
    """``runs`` rows for the attempts whose process is gone, and their marker paths."""
    import pyarrow.fs as pafs

    fs, folder = _fs(root, options)
    if fs is None:
        return [], []
    rows, paths = [], []
    for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
        if info.type != pafs.FileType.File or not info.path.endswith(".json"):
            continue
        try:
            with fs.open_input_stream(info.path) as f:
                m = json.loads(f.read().decode())
        except (OSError, ValueError):
            log.warning("unreadable attempt marker %s: left in place", info.path)
            continue
        if _alive(m):
            continue
        started = dt.datetime.fromisoformat(m["started_at"]) if m.get("started_at") else None
        rows.append({
            "run_id": m.get("run_id"), "pipeline_run_id": m.get("pipeline_run_id"), "stage": m.get("stage"),
            "status": INTERRUPTED, "error": f"{INTERRUPTED_ERROR} (host {m.get('host')}, pid {m.get('pid')})",
            "started_at": started, "finished_at": None, "wall_seconds": None,
            "config_hash": m.get("config_hash"), "stage_config_hash": m.get("stage_config_hash"),
            "input_versions": m.get("input_versions") or {}, "output_versions": {}, "counts": {}, "metrics": {},
        })
        paths.append(info.path)
    return rows, paths


def record_interrupted(store, schema: str) -> int:
    """Append a ``runs`` row for every interrupted attempt, then drop their markers (keyed by
    run_id, so a crash between the two records nothing twice)."""
    root, options = store.cfg.root, dict(store.cfg.storage_options)
    rows, paths = interrupted_rows(root, options)
    if not rows:
        return 0
    store.append_new("runs", store.spark.createDataFrame(rows, schema), ["run_id"])
    fs, _ = _fs(root, options)
    for p in paths:
        try:
            fs.delete_file(p)
        except OSError:
            log.warning("could not remove the attempt marker %s", p)
    for r in rows:
        log.warning("[%s] run %s started %s never finished: recorded in runs as %s", r["stage"], r["run_id"],
                    r["started_at"], INTERRUPTED)
    return len(rows)


def start(store, schema: str, marker: dict) -> Optional[str]:
    """At a stage run's start: record earlier interrupted attempts, then mark this one.
    Bookkeeping only: a failure here is logged and the stage runs."""
    try:
        record_interrupted(store, schema)
        return begin(store.cfg.root, dict(store.cfg.storage_options), marker)
    except Exception:
        log.exception("could not track the stage attempt under %s", store.cfg.root)
        return None


def finish(store, path: Optional[str]) -> None:
    """Once the run's ``runs`` row is written: the attempt needs no marker any more."""
    try:
        end(store.cfg.root, dict(store.cfg.storage_options), path)
    except Exception:
        log.exception("could not remove the attempt marker %s", path)

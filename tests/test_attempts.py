"""Attempt markers (jobs/common/attempts.py): what stands in for a killed driver's runs row."""
import json
import os
import subprocess
import sys

from jobs.common import attempts


def test_marker_lifecycle_and_dead_processes_become_interrupted_rows(tmp_path):
    root = str(tmp_path)
    path = attempts.begin(root, {}, {"run_id": "r1", "stage": "annotate", "pipeline_run_id": "p1",
                                     "started_at": "2026-01-01T00:00:00+00:00", "input_versions": {"documents": 3}})
    assert os.path.exists(path)
    assert attempts.interrupted_rows(root, {}) == ([], [])  # this process is alive: not interrupted

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    marker = json.load(open(path))
    marker["pid"] = int(dead.stdout)  # a process that has exited
    json.dump(marker, open(path, "w"))
    rows, paths = attempts.interrupted_rows(root, {})
    assert paths == [path]
    [row] = rows
    assert (row["run_id"], row["stage"], row["status"], row["pipeline_run_id"]) == ("r1", "annotate", "interrupted", "p1")
    assert row["finished_at"] is None and row["input_versions"] == {"documents": 3} and "killed" in row["error"]

    marker["host"] = "another-host"  # a marker from another driver host is taken as dead too
    marker["pid"] = os.getpid()
    json.dump(marker, open(path, "w"))
    assert len(attempts.interrupted_rows(root, {})[0]) == 1

    attempts.end(root, {}, path)
    assert attempts.interrupted_rows(root, {}) == ([], [])


def test_unreadable_marker_is_left_alone(tmp_path):
    os.makedirs(tmp_path / attempts.FOLDER)
    (tmp_path / attempts.FOLDER / "x.json").write_text("{not json")
    assert attempts.interrupted_rows(str(tmp_path), {}) == ([], [])
    assert (tmp_path / attempts.FOLDER / "x.json").exists()


def test_roots_the_filesystem_cannot_reach_are_not_tracked():
    assert attempts.begin("dbfs:/mnt/x", {}, {"run_id": "r"}) is None
    assert attempts.interrupted_rows("dbfs:/mnt/x", {}) == ([], [])

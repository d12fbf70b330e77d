"""No secret in any log line or table: ``nr run`` with the openai engine and a recognisable API
key, through its failure paths (a server error on every retry of one row -> llm_error; a
dropped connection; a revoked key -> the stage fails), then every byte the run left behind
(stdout and stderr of the driver and its Spark workers, every file under storage.root:
Parquet data, Delta logs, runs rows, attempt markers) is searched for the key.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from tests.conftest import REPO
from tests.test_openai_faults import RawServer, ok_body, respond

KEY = "sk-nr-SECRET-canary-4b1d9e7a"
ANNOTATION = {"completeness": 4, "complexity": 4, "correctness": 4, "reasoning": 4, "domain": "math"}


def behaviour(srv, conn, prompt, attempt, body) -> bool:
    if srv.revoked:
        respond(conn, 403, b'{"error": {"message": "key revoked"}}', "Forbidden")
        return True
    if "OUTAGE500" in prompt:
        respond(conn, 500, b'{"error": {"message": "internal error"}}', "Internal Server Error")
        return True
    if "DROPPED" in prompt and attempt == 1:
        full = ok_body(prompt)
        respond(conn, 200, full[:10], "OK", declared=len(full))
        conn.close()
        return False
    payload = json.dumps({"choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": json.dumps(ANNOTATION)}}],
                          "usage": {"prompt_tokens": 50, "completion_tokens": 20}}).encode()
    respond(conn, 200, payload, "OK")
    return True


def nr(config: str, stages: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO, "PYSPARK_PYTHON": sys.executable, "NR_TEST_SECRET_KEY": KEY,
           "NR_LOG_LEVEL": "DEBUG"}
    return subprocess.run([sys.executable, "-m", "jobs.cli", "run", "--config", config, "--stages", stages],
                          cwd=REPO, env=env, capture_output=True, timeout=900)


def test_api_key_is_in_no_log_line_and_no_table(spark_subprocess, tmp_path):
    srv = RawServer(behaviour)
    srv.revoked = False
    try:
        pages = ["a page about sums: we derive each step, therefore it holds. " * 3,
                 "OUTAGE500 a page the server fails on every retry, because it is down. " * 3,
                 "DROPPED a page whose first answer is cut off mid-body, then it works. " * 3]
        src = tmp_path / "pages.jsonl"
        src.write_text("".join(json.dumps({"url": f"u{i}", "text": t}) + "\n" for i, t in enumerate(pages)))
        root = tmp_path / "root"
        cfg = {
            "storage": {"root": str(root)},
            "spark": {"master": "local[1]", "shuffle_partitions": 1},
            "pipeline": {"progress": False},
            "ingest": {"sources": [{"name": "pages", "path": str(src), "format": "jsonl"}]},
            "llm": {"models": {"default": {
                "engine": "openai", "model": "served", "label": "served", "base_url": srv.base_url,
                "api_key_env": "NR_TEST_SECRET_KEY", "max_retries": 2, "request_timeout_s": 5,
                "engine_kwargs": {"backoff_base_s": 0.01, "backoff_max_s": 0.05}}}},
        }
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump(cfg))

        first = nr(str(config), "ingest,annotate")
        assert first.returncode == 0, first.stderr.decode(errors="replace")[-3000:]
        srv.revoked = True  # the re-run retries the llm_error row and meets a revoked key
        second = nr(str(config), "annotate")
        assert second.returncode == 1
        logs = b"".join([first.stdout, first.stderr, second.stdout, second.stderr])
    finally:
        srv.stop()

    assert srv.auth and all(h == f"Bearer {KEY}" for h in srv.auth), "the key was sent to the server"
    assert b"llm_error" in logs or b"failed_llm_error" in logs
    assert b"HTTP 403" in logs and b"refused the credentials" in logs
    needle = KEY.encode()
    assert needle not in logs, "the API key is in a log line"
    scanned = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                data = fh.read()
            scanned += 1
            assert needle not in data, f"the API key is in {os.path.join(dirpath, f)}"
    assert scanned > 10
    # the tables hold the failure evidence, without the key
    from deltalake import DeltaTable

    # (the re-run deleted the llm_error row to regenerate it: look in the versions before)
    path = str(root / "annotations")
    ann = [r for v in range(DeltaTable(path).version() + 1) for r in DeltaTable(path, version=v).to_pyarrow_table().to_pylist()]
    runs = DeltaTable(str(root / "runs")).to_pyarrow_table().to_pylist()
    assert any(r["status"] == "llm_error" and "HTTP 500" in (r["error"] or "") for r in ann)
    assert any(r["stage"] == "annotate" and r["status"] == "failed" and "HTTP 403" in (r["error"] or "") for r in runs)

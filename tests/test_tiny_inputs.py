"""The README's main command, and every inspection command after it, on the bundled sample cut
to 0, 1, 2 and 3 documents (the scripted model): exit 0 everywhere, every stage ok, and where a
computation needs more rows than it has, a note in the report instead of an exception."""
from __future__ import annotations

import json
import os

import pytest

from jobs import cli
from jobs.common.config import load_config
from jobs.common.storage import TableStore
from jobs.ops.report import MIN_MAP_POINTS
from tests.conftest import REPO
from tests.test_pipeline_e2e import SCRIPT, _survives_scripted_model


def _sources(k: int, folder) -> str:
    """A source of the first k sample pages that the scripted model selects and turns into a
    question, so that k rows reach every stage after annotate."""
    pages = []
    for name in ("finemath.jsonl", "dclm_baseline.jsonl"):
        with open(os.path.join(REPO, "data", "sample", name)) as f:
            pages += [json.loads(line) for line in f]
    chosen = [p for p in pages if _survives_scripted_model(p["text"][:1500].strip())][:k]
    assert len(chosen) == k
    path = os.path.join(str(folder), "pages.jsonl")
    with open(path, "w") as f:
        f.writelines(json.dumps({"url": p.get("url") or f"https://sample.example/{i}", "text": p["text"]}) + "\n"
                     for i, p in enumerate(chosen))
    return "ingest.sources=" + json.dumps([{"name": "sample", "path": path, "format": "jsonl"}])


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_main_command_and_inspection_on_k_documents(spark, tmp_path, k, capsys):
    root, report_dir = tmp_path / "root", tmp_path / "report"
    common = ["--config", os.path.join(REPO, "conf", "local.yaml"),
              "--set", f"storage.root={root}", "--set", "pipeline.progress=false",
              "--set", "llm.models.default.engine=scripted",
              "--set", "llm.models.default.engine_kwargs={script: %s}" % SCRIPT,
              "--set", _sources(k, tmp_path),
              # every page on to synthesis: the k rows then reach every later stage
              "--set", "annotate.select={top_fraction: 1.0}"]
    assert cli.main(["run", *common, "--report", str(report_dir)]) == 0, capsys.readouterr().err[-3000:]
    out = capsys.readouterr().out
    assert str(report_dir) in out.strip().splitlines()[-1]  # the report's path is the last line

    cfg = load_config(os.path.join(REPO, "conf", "local.yaml"), [a for a in common[3::2]])
    store = TableStore(spark, cfg.storage)
    runs = store.read("runs").collect()
    latest = {}
    for r in sorted(runs, key=lambda r: r["started_at"]):
        latest[r["stage"]] = r
    assert latest and all(r["status"] in ("ok", "skipped") for r in latest.values()), \
        {s: (r["status"], r["error"]) for s, r in latest.items() if r["status"] not in ("ok", "skipped")}
    assert latest["ingest"]["counts"].get("out", 0) == k
    if k:
        assert store.read("questions").where("status = 'ok'").count() == k
        assert store.read("dataset").count() == k

    report = json.loads((report_dir / "report.json").read_text())
    assert (report_dir / "index.html").exists()
    if k < MIN_MAP_POINTS:  # what cannot be computed on so few rows says so in a note
        assert report["embedding_map"] is None
        assert any("embedding map" in n for n in report["notes"]), report["notes"]
    else:
        assert report["embedding_map"]["points"] == k
    if k:
        assert report["funnel"][-1] == {"step": "dataset", "count": k}

    for command in (["status"], ["plan"], ["report", "--output", str(tmp_path / "report2")]):
        assert cli.main([*command, *common]) == 0, (command, capsys.readouterr().err[-3000:])
    capsys.readouterr()

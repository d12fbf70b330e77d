"""Every notebook runs top to bottom in a clean kernel (nbclient) against the scripted sample run,
and is stored in git without outputs."""
from __future__ import annotations

import json
import os
import re

import pytest
import yaml
from deltalake import DeltaTable

from tests.conftest import REPO

NOTEBOOKS = ["explore_tables.ipynb", "report.ipynb", "dedup_and_decontamination.ipynb"]
NB_DIR = os.path.join(REPO, "notebooks")


def test_every_notebook_is_listed_and_stored_without_outputs():
    assert sorted(f for f in os.listdir(NB_DIR) if f.endswith(".ipynb")) == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        with open(os.path.join(NB_DIR, name)) as f:
            nb = json.load(f)
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell.get("outputs") == [] and cell.get("execution_count") is None, name


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") if out.get("output_type") == "stream" else
                         "".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(sample_run, name, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    cfg, _ = sample_run
    monkeypatch.setenv("NR_ROOT", cfg.storage.root)
    config = tmp_path / "run.yaml"  # the run's config: its benchmarks are the house ones planted in the sample
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    monkeypatch.setenv("NR_CONFIG", str(config))
    monkeypatch.setenv("NR_REPORT_DIR", str(tmp_path / "report"))
    monkeypatch.setenv("NR_WORK_DIR", str(tmp_path / "work"))
    (tmp_path / "work").mkdir()
    nb = nbformat.read(os.path.join(NB_DIR, name), as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": NB_DIR}}).execute()
    text = outputs_text(nb)
    if name == "explore_tables.ipynb":  # its first cell shows each table's row count
        shown = re.search(r"'dataset': (\d+)", text)
        dataset = DeltaTable(os.path.join(cfg.storage.root, "dataset")).to_pyarrow_table().num_rows
        assert shown and int(shown.group(1)) == dataset > 0, text[:2000]
    if name == "report.ipynb":
        assert (tmp_path / "report" / "report.json").is_file() and "report of " in text
    if name == "dedup_and_decontamination.ipynb":
        assert "clusters with planted near-duplicates: 3" in text
        # every question the run flagged is flagged here too (the planted copies may add more)
        run_flagged = DeltaTable(os.path.join(cfg.storage.root, "contamination")).to_pandas()["item_id"].nunique()
        flagged = int(re.search(r"flagged items: (\d+)", text).group(1))
        assert run_flagged >= 1 and flagged >= run_flagged and "13-gram : " in text

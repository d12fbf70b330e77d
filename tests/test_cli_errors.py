"""The five errors that stop a run before its first stage, each as a CLI call: what is missing,
where it was looked for, and the command or config key that fixes it."""
from __future__ import annotations

import os

import pytest
import yaml

from jobs import cli


@pytest.fixture()
def config_file(tmp_path):
    def make(**sections) -> str:
        raw = {"storage": {"root": str(tmp_path / "root")}, "pipeline": {"progress": False}, **sections}
        path = tmp_path / "conf.yaml"
        path.write_text(yaml.safe_dump(raw))
        return str(path)
    return make


def run_cli(capsys, *argv) -> tuple[int, str]:
    rc = cli.main(list(argv))
    return rc, capsys.readouterr().err


def test_missing_source_table(spark, config_file, tmp_path, capsys):
    conf = config_file()
    rc, err = run_cli(capsys, "run", "--config", conf, "--stages", "ingest")
    assert rc == 2
    root = tmp_path / "root"
    assert "ingest source 'dclm': the source table is missing" in err
    assert f"looked for: a Delta table at {root}/sources/dclm (ingest.sources[0].path = '{{root}}/sources/dclm')" in err
    assert f"`nr run --config {conf} --stages bootstrap,ingest` writes the bundled sample there" in err
    assert "set ingest.sources[0].path in the config" in err
    assert not os.path.exists(root / "documents")


def test_missing_model(spark, config_file, tmp_path, capsys):
    missing = tmp_path / "models" / "absent.gguf"
    conf = config_file(llm={"models": {"default": {"engine": "transformers", "model": str(missing)}}})
    rc, err = run_cli(capsys, "run", "--config", conf, "--stages", "bootstrap,ingest,annotate")
    assert rc == 2
    assert f"model 'default' for stage 'annotate' is missing: llm.models.default.model = '{missing}'" in err
    assert f"looked for: {missing} (a local Hugging Face model folder or a .gguf file)" in err
    assert "--set llm.models.default.model=PATH" in err and "'smollm2-135m'" in err and "nr fetch-model" in err
    assert "source table is missing" not in err, "bootstrap runs first and writes the sample sources"


def test_missing_benchmark_index_and_files(spark, config_file, tmp_path, capsys):
    stages = "bootstrap,ingest,annotate,synthesize,decontaminate"
    conf = config_file(decontaminate={"index": str(tmp_path / "no-index")})
    rc, err = run_cli(capsys, "run", "--config", conf, "--stages", stages)
    assert rc == 2
    assert "the decontamination benchmark index is missing" in err
    assert f"looked for: {tmp_path / 'no-index'}/manifest.json (decontaminate.index" in err
    assert "nr benchmarks build-index" in err and "decontaminate.index: builtin" in err
    # A built-in benchmark the shipped index does not hold is read from its files.
    conf = config_file(decontaminate={"benchmarks": ["math", "gpqa_main"],
                                      "benchmarks_dir": str(tmp_path / "no-benchmarks")})
    rc, err = run_cli(capsys, "run", "--config", conf, "--stages", stages)
    assert rc == 2
    assert "decontamination benchmarks ['gpqa_main'] are read from their files" in err
    assert f"looked for: {tmp_path / 'no-benchmarks'} (decontaminate.benchmarks_dir" in err
    assert "NR_BENCHMARKS_DIR" in err and "decontaminate.enabled=false" in err


def test_unknown_stage_name(spark, config_file, capsys):
    conf = config_file()
    for argv in (["run", "--config", conf, "--stages", "ingest,annotat"], ["stage", "annotat", "--config", conf]):
        rc, err = run_cli(capsys, *argv)
        assert rc == 2, argv
        assert "unknown stage 'annotat' (did you mean 'annotate'?)" in err
        assert "looked for: the stage list (jobs/stages/__init__.py STAGES): bootstrap, ingest" in err
        assert "`nr stages` lists them" in err


def test_stage_whose_input_table_does_not_exist_yet(spark, config_file, tmp_path, capsys):
    conf = config_file()
    rc, err = run_cli(capsys, "run", "--config", conf, "--stages", "synthesize")
    assert rc == 2
    assert "stage 'synthesize' needs the table 'annotations', which does not exist yet" in err
    assert f"looked for: a Delta table at {tmp_path / 'root'}/annotations" in err
    assert f"`nr run --config {conf} --stages annotate,synthesize`" in err
    rc, err = run_cli(capsys, "stage", "respond", "--config", conf)
    assert rc == 2 and "stage 'respond' needs the table 'questions'" in err and "--stages synthesize,respond" in err

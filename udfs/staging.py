"""Model folders on S3 staged onto the node's local disk, once per node (executor side).

``llm.models.X.model: s3://bucket/models/name/`` makes every Python worker on a node ask for
the same folder; vLLM and transformers need it on local disk. ``stage_model``:

* lists the prefix (one LIST per call), and returns at once when the local copy's manifest
  already records every object's size and ETag;
* otherwise takes a file lock on that model's cache folder, so concurrent workers on the node
  wait for the first one instead of downloading N copies, and re-checks after the wait;
* downloads each missing object with boto3 into ``<file>.part``, resuming a partial file with a
  ranged GET pinned to the object's ETag (``IfMatch``: a changed object restarts instead of
  mixing versions); verifies the size and the ETag (MD5 for single-part uploads, the multipart
  MD5-of-MD5s with the part size read back from S3), then renames it into place;
* records each verified object in the manifest as it goes, so an interrupted staging resumes
  with the objects still missing.

Objects encrypted with SSE-KMS have ETags that are not MD5 digests; for those the size check
and the ETag-pinned download stand alone (logged).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from udfs import fs

log = logging.getLogger(__name__)

MANIFEST = ".nr-staged.json"
_LOCK_TIMEOUT_S = 4 * 3600  # a 140 GB model over a slow link
_CHUNK = 8 << 20


class StagingError(RuntimeError):
    """The model could not be staged; the message names the S3 path (never a credential)."""


@dataclass
class StagedModel:
    path: Path
    downloaded_files: int = 0
    downloaded_bytes: int = 0
    resumed_files: int = 0
    files: dict = field(default_factory=dict)  # relative path -> (size, etag)


def local_dir(uri: str, cache_dir: Optional[str] = None) -> Path:
    """Where ``uri`` is staged: ``<cache>/s3/<bucket>/<prefix>``."""
    base = cache_dir or os.environ.get("NR_CACHE_DIR") or Path.home() / ".cache" / "nr"
    bucket_key = fs.s3_uri(uri)[len("s3://"):].strip("/")
    return Path(base).expanduser() / "s3" / bucket_key


def _client(options):
    try:
        import boto3
    except ImportError as e:  # pragma: no cover - the aws extra
        raise StagingError("staging a model from S3 needs boto3 (pip install 'natural-reasoning-spark[aws]')") from e
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"max_attempts": 8, "mode": "adaptive"}),
                        **fs.boto3_client_kwargs(options))


def _error(e: BaseException, uri: str, options) -> StagingError:
    """boto3's error as a clear message about ``uri``."""
    code = getattr(e, "response", {}).get("Error", {}).get("Code", "") if hasattr(e, "response") else ""
    bucket = fs.s3_uri(uri)[len("s3://"):].split("/", 1)[0]
    if code in ("NoSuchBucket",):
        return StagingError(f"{uri}: bucket {bucket!r} does not exist")
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "403"):
        return StagingError(f"{uri}: access denied ({code}); check the credentials this process has "
                            "(AWS_ACCESS_KEY_ID/AWS_PROFILE in the environment, or the instance role)")
    if code in ("NoSuchKey", "404"):
        return StagingError(f"{uri}: no such object")
    return StagingError(f"{uri}: {fs.redact(str(e), options)[:300]}")


def _listing(client, uri: str, options) -> dict[str, tuple[int, str]]:
    bucket, _, prefix = fs.s3_uri(uri)[len("s3://"):].partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    out = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                rel = o["Key"][len(prefix):]
                if rel and not rel.endswith("/"):  # "folder" marker objects carry no data
                    out[rel] = (int(o["Size"]), o["ETag"].strip('"'))
    except Exception as e:
        raise _error(e, uri, options) from None
    if not out:
        raise StagingError(f"{uri}: no objects under this prefix (is the model path right?)")
    return out


def _read_manifest(root: Path) -> dict:
    try:
        return {k: tuple(v) for k, v in json.loads((root / MANIFEST).read_text())["files"].items()}
    except (OSError, ValueError, KeyError):
        return {}


def _write_manifest(root: Path, uri: str, files: dict) -> None:
    tmp = root / (MANIFEST + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"uri": uri, "files": files}, indent=1, sort_keys=True))
    os.replace(tmp, root / MANIFEST)


def _complete(root: Path, want: dict, have: dict) -> bool:
    return all(have.get(rel) == meta and (root / rel).is_file() and (root / rel).stat().st_size == meta[0]
               for rel, meta in want.items())


def _expected_etag(client, bucket: str, key: str, path: Path, etag: str, size: int) -> Optional[str]:
    """The ETag S3 would give ``path``'s bytes, or None when the ETag is not an MD5 digest (SSE-KMS)."""
    head = client.head_object(Bucket=bucket, Key=key)
    if head.get("ServerSideEncryption") == "aws:kms":
        return None
    if "-" not in etag:
        h = hashlib.md5()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        return h.hexdigest()
    parts = int(etag.rsplit("-", 1)[1])
    part_size = int(client.head_object(Bucket=bucket, Key=key, PartNumber=1)["ContentLength"])
    digests = []
    with open(path, "rb") as f:
        for _ in range(parts):
            h = hashlib.md5()
            left = part_size
            while left:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            digests.append(h.digest())
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{parts}"


def _download(client, uri: str, bucket: str, key: str, dest: Path, size: int, etag: str, res: StagedModel,
              options) -> None:
    part = dest.with_name(dest.name + ".part")
    tag = dest.with_name(dest.name + ".part-etag")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = 0
    if part.exists() and tag.exists() and tag.read_text() == etag and part.stat().st_size <= size:
        offset = part.stat().st_size  # the same object, partly fetched by an interrupted run
        res.resumed_files += offset > 0
    else:
        part.unlink(missing_ok=True)
        tag.write_text(etag)
    try:
        if offset < size:
            kw = {"Range": f"bytes={offset}-"} if offset else {}
            body = client.get_object(Bucket=bucket, Key=key, IfMatch=f'"{etag}"', **kw)["Body"]
            with open(part, "ab") as out:
                for chunk in body.iter_chunks(_CHUNK):
                    out.write(chunk)
                    res.downloaded_bytes += len(chunk)
        got = part.stat().st_size if part.exists() else 0
        if not part.exists():
            part.touch()  # an empty object
        if got != size:
            raise StagingError(f"{uri}/{key.rsplit('/', 1)[-1]}: downloaded {got} bytes, S3 lists {size}")
        expected = _expected_etag(client, bucket, key, part, etag, size)
        if expected is None:
            log.info("%s: SSE-KMS object, ETag is not a digest; verified by size and the ETag-pinned download", key)
        elif expected != etag:
            part.unlink(missing_ok=True)
            raise StagingError(f"s3://{bucket}/{key}: checksum mismatch after download (ETag {etag}, "
                               f"local {expected}); the partial file was removed, run again")
    except StagingError:
        raise
    except Exception as e:
        if getattr(e, "response", {}).get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
            part.unlink(missing_ok=True)  # the object changed since it was listed: restart it next time
        raise _error(e, f"s3://{bucket}/{key}", options) from None
    os.replace(part, dest)
    tag.unlink(missing_ok=True)
    res.downloaded_files += 1


def stage_model(uri: str, cache_dir: Optional[str] = None, options: Optional[Mapping[str, str]] = None
                ) -> StagedModel:
    """The S3 folder ``uri`` as a local folder, downloaded at most once per node (see module doc)."""
    from filelock import FileLock, Timeout

    root = local_dir(uri, cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    client = _client(options)
    want = _listing(client, uri, options)
    res = StagedModel(root, files=want)
    if _complete(root, want, _read_manifest(root)):
        return res
    try:
        with FileLock(str(root) + ".lock", timeout=_LOCK_TIMEOUT_S):
            have = _read_manifest(root)
            if _complete(root, want, have):  # another worker staged it while we waited
                return res
            bucket, _, prefix = fs.s3_uri(uri)[len("s3://"):].partition("/")
            prefix = prefix.rstrip("/") + "/" if prefix else ""
            log.info("staging %s (%d files, %.1f MB) into %s", uri, len(want),
                     sum(s for s, _ in want.values()) / 1e6, root)
            done = {rel: meta for rel, meta in have.items() if want.get(rel) == meta and (root / rel).is_file()}
            for rel, (size, etag) in sorted(want.items()):
                if done.get(rel) == (size, etag) and (root / rel).stat().st_size == size:
                    continue
                _download(client, uri, bucket, prefix + rel, root / rel, size, etag, res, options)
                done[rel] = (size, etag)
                _write_manifest(root, uri, done)
            _write_manifest(root, uri, {rel: want[rel] for rel in want})
    except Timeout:
        raise StagingError(f"{uri}: waited {_LOCK_TIMEOUT_S}s for another worker staging it into {root}") from None
    return res

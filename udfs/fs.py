"""One filesystem layer for every file the project reads or writes itself.

Delta tables go through delta-rs and Spark; everything else of ours -- the bridge's staged
Parquet files, benchmark files and the decontamination index, exports, the standalone tools'
inputs and outputs, staged models -- goes through here, over pyarrow's filesystems
(``pyarrow.fs.S3FileSystem`` for S3, ``LocalFileSystem`` otherwise). It lives on the executor
side because executors use it too (exports and the bridge's Parquet files are written by
tasks), and ``udfs`` never imports ``jobs``.

Paths, the same from the user's side whatever the storage:

* a local path or ``file://...``;
* ``s3://bucket/key``, ``s3a://`` and ``s3n://`` (one bucket namespace; Hadoop's scheme names
  are accepted where a Spark config uses them);
* ``dbfs:/path`` -- Databricks' FUSE mount ``/dbfs/path`` on the driver and every worker
  (``NR_DBFS_MOUNT`` names another mount point).

``storage_options`` are delta-rs's (object_store's) keys, so one ``storage.storage_options``
serves delta-rs, pyarrow and boto3: ``AWS_REGION``, ``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP``
(case-insensitive, the ``AWS_`` prefix optional). Credentials come from the environment or the
default AWS chain. Errors name the path and the kind of failure (missing bucket, missing key,
access denied) and never a secret.
"""
from __future__ import annotations

import fnmatch
import functools
import os
import posixpath
import re
import shutil
from contextlib import contextmanager
from typing import Iterator, Mapping, Optional

import pyarrow.fs as pafs

S3_SCHEMES = ("s3://", "s3a://", "s3n://")
DBFS_MOUNT_ENV = "NR_DBFS_MOUNT"
_SECRET_KEYS = ("secret_access_key", "session_token", "token", "password", "secret")


class StorageAccessError(OSError):
    """A read or write of ours failed; the message names the path and never a secret."""


class PathNotFound(StorageAccessError, FileNotFoundError):
    pass


class BucketNotFound(PathNotFound):
    pass


class AccessDenied(StorageAccessError, PermissionError):
    pass


# --------------------------------------------------------------------------- paths


def is_s3(path: str) -> bool:
    return path.startswith(S3_SCHEMES)


def is_remote(path: str) -> bool:
    """True for object stores (anything with a scheme other than file://): the one test of a
    path's kind; ``is_local`` also leaves out Databricks' dbfs:/."""
    return "://" in path and not path.startswith("file://")


def is_local(path: str) -> bool:
    """A path on this machine's file system (plain, or file://)."""
    return not is_remote(path) and not path.startswith("dbfs:")


def s3_uri(path: str) -> str:
    """``s3a://b/k`` and ``s3n://b/k`` as ``s3://b/k``; other paths unchanged."""
    return "s3://" + path.split("://", 1)[1] if is_s3(path) else path


def local_path(path: str) -> str:
    """The local file path of a local, ``file://`` or ``dbfs:/`` path (no check that it exists)."""
    if path.startswith("file://"):
        path = path[len("file://"):]
    elif path.startswith("dbfs:"):
        mount = os.environ.get(DBFS_MOUNT_ENV, "/dbfs")
        path = mount.rstrip("/") + "/" + path[len("dbfs:"):].lstrip("/")
    return os.path.abspath(os.path.expanduser(path))


def join(base: str, *parts: str) -> str:
    out = base.rstrip("/")
    for p in parts:
        out += "/" + p.strip("/")
    return out


def _normalized_options(options: Optional[Mapping[str, str]]) -> dict[str, str]:
    """delta-rs keys as lower-case names without the ``aws_`` prefix: region, endpoint, ..."""
    out = {}
    for k, v in (options or {}).items():
        k = k.lower()
        k = k[4:] if k.startswith("aws_") else k
        out[{"endpoint_url": "endpoint", "default_region": "region"}.get(k, k)] = str(v)
    return out


def s3_settings(options: Optional[Mapping[str, str]] = None) -> dict[str, Optional[str]]:
    """Region, endpoint and explicit credentials from ``storage_options``, else the environment
    (the variables delta-rs, pyarrow and boto3 all read)."""
    o = _normalized_options(options)
    env = os.environ.get
    return {
        "region": o.get("region") or env("AWS_REGION") or env("AWS_DEFAULT_REGION"),
        "endpoint": o.get("endpoint") or env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL"),
        "access_key": o.get("access_key_id"),
        "secret_key": o.get("secret_access_key"),
        "session_token": o.get("session_token") or o.get("token"),
        "allow_http": o.get("allow_http"),
    }


def boto3_client_kwargs(options: Optional[Mapping[str, str]] = None) -> dict:
    """``boto3.client("s3", **kwargs)`` for the same endpoint, region and credentials."""
    s = s3_settings(options)
    kw = {"region_name": s["region"], "endpoint_url": s["endpoint"], "aws_access_key_id": s["access_key"],
          "aws_secret_access_key": s["secret_key"], "aws_session_token": s["session_token"]}
    return {k: v for k, v in kw.items() if v}


@functools.lru_cache(maxsize=16)
def _s3(region, endpoint, access_key, secret_key, session_token, env_creds) -> pafs.S3FileSystem:
    kw: dict = {"allow_bucket_creation": False, "allow_bucket_deletion": False}
    if region:
        kw["region"] = region
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kw["endpoint_override"] = host or scheme
        kw["scheme"] = scheme if host else "https"
    if access_key and secret_key:
        kw.update(access_key=access_key, secret_key=secret_key, session_token=session_token)
    return pafs.S3FileSystem(**kw)


def resolve(path: str, options: Optional[Mapping[str, str]] = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for any of our paths."""
    if is_s3(path):
        s = s3_settings(options)
        # The environment's credentials are part of the cache key: a changed key must not reuse
        # a filesystem built with the old one.
        env_creds = tuple(os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                       "AWS_SESSION_TOKEN", "AWS_PROFILE"))
        fs = _s3(s["region"], s["endpoint"], s["access_key"], s["secret_key"], s["session_token"], env_creds)
        return fs, path.split("://", 1)[1].rstrip("/")
    if is_remote(path):
        fs, inner = pafs.FileSystem.from_uri(path)
        return fs, inner.rstrip("/")
    return pafs.LocalFileSystem(), local_path(path)


# --------------------------------------------------------------------------- errors


def _secrets(options: Optional[Mapping[str, str]]) -> list[str]:
    vals = [v for k, v in (options or {}).items() if any(s in k.lower() for s in _SECRET_KEYS)]
    vals += [os.environ.get(k) for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
    return [v for v in vals if v and len(v) >= 4]


def redact(text: str, options: Optional[Mapping[str, str]] = None) -> str:
    """``text`` with every secret value we know of replaced by ``***``."""
    for v in _secrets(options):
        text = text.replace(v, "***")
    return text


_DENIED = re.compile(r"ACCESS_DENIED|AccessDenied|InvalidAccessKeyId|INVALID_ACCESS_KEY_ID|SIGNATURE_DOES_NOT_MATCH|SignatureDoesNotMatch|403|Forbidden|"
                     r"ExpiredToken|InvalidToken|lacked the necessary privileges", re.I)
_NO_BUCKET = re.compile(r"NoSuchBucket|NO_SUCH_BUCKET|bucket does not exist", re.I)


def _bucket_missing(path: str, options) -> bool:
    if not is_s3(path):
        return False
    fs, inner = resolve(path, options)
    try:
        return fs.get_file_info(inner.split("/", 1)[0]).type == pafs.FileType.NotFound
    except OSError:
        return False


def translate(err: BaseException, path: str, action: str, options: Optional[Mapping[str, str]] = None
              ) -> StorageAccessError:
    """A clear error for a failed ``action`` ('read', 'write', 'list', ...) on ``path``."""
    msg = redact(str(err), options).splitlines()[0][:300] if str(err) else type(err).__name__
    if isinstance(err, StorageAccessError):
        return err
    if _DENIED.search(str(err)) or isinstance(err, PermissionError):
        return AccessDenied(
            f"{path}: access denied ({action}); check the credentials this process has (AWS_ACCESS_KEY_ID/"
            f"AWS_PROFILE in the environment, or the instance role) and the bucket's policy [{msg}]")
    if _NO_BUCKET.search(str(err)) or (isinstance(err, FileNotFoundError) and _bucket_missing(path, options)):
        bucket = s3_uri(path)[len("s3://"):].split("/", 1)[0]
        return BucketNotFound(f"{path}: bucket {bucket!r} does not exist ({action})")
    if isinstance(err, FileNotFoundError):
        return PathNotFound(f"{path}: no such file or folder ({action})")
    return StorageAccessError(f"{path}: {action} failed: {msg}")


@contextmanager
def access(path: str, action: str, options: Optional[Mapping[str, str]] = None):
    """Turn any failure inside the block into a clear ``StorageAccessError`` about ``path``."""
    try:
        yield
    except StorageAccessError:
        raise
    except OSError as e:
        raise translate(e, path, action, options) from None


# --------------------------------------------------------------------------- operations

_BUCKETS_SEEN: set = set()


def require_bucket(path: str, options=None) -> None:
    """Fail early and clearly when ``path``'s bucket is missing or not ours to read (one HEAD
    per bucket and process); a no-op for local paths. delta-rs reports a missing bucket as a
    generic request error, after its retries."""
    if not is_s3(path):
        return
    bucket = s3_uri(path)[len("s3://"):].split("/", 1)[0]
    key = (bucket, s3_settings(options)["endpoint"], os.environ.get("AWS_ACCESS_KEY_ID"))
    if key in _BUCKETS_SEEN:
        return
    fs, _ = resolve(path, options)
    with access(path, "check bucket", options):
        kind = fs.get_file_info(bucket).type
    if kind == pafs.FileType.NotFound:
        raise BucketNotFound(f"{path}: bucket {bucket!r} does not exist")
    _BUCKETS_SEEN.add(key)



def info(path: str, options=None) -> pafs.FileInfo:
    fs, inner = resolve(path, options)
    with access(path, "stat", options):
        return fs.get_file_info(inner)


def exists(path: str, options=None) -> bool:
    return info(path, options).type != pafs.FileType.NotFound


def isdir(path: str, options=None) -> bool:
    return info(path, options).type == pafs.FileType.Directory


def isfile(path: str, options=None) -> bool:
    return info(path, options).type == pafs.FileType.File


def list_files(path: str, options=None, recursive: bool = False) -> list[tuple[str, int]]:
    """(path, size) of the files in folder ``path``, sorted; paths keep the caller's scheme."""
    fs, inner = resolve(path, options)
    with access(path, "list", options):
        infos = fs.get_file_info(pafs.FileSelector(inner, recursive=recursive, allow_not_found=False))
    base = path.rstrip("/")
    out = [(base + "/" + i.path[len(inner):].lstrip("/"), i.size) for i in infos if i.type == pafs.FileType.File]
    return sorted(out)


def glob(pattern: str, options=None) -> list[str]:
    """Files matching a shell pattern (``*``, ``?``, ``[...]``) in its last path component(s)."""
    first = min((pattern.index(c) for c in "*?[" if c in pattern), default=len(pattern))
    folder = pattern[:first].rsplit("/", 1)[0]
    if not exists(folder, options):
        return []
    recursive = "/" in pattern[first:]
    return [p for p, _ in list_files(folder, options, recursive=recursive) if fnmatch.fnmatchcase(p, pattern)]


@contextmanager
def open_input(path: str, options=None) -> Iterator:
    """A binary, seekable file for reading."""
    fs, inner = resolve(path, options)
    with access(path, "read", options):
        f = fs.open_input_file(inner)
    try:
        yield f
    finally:
        f.close()


def read_bytes(path: str, options=None) -> bytes:
    with open_input(path, options) as f, access(path, "read", options):
        return f.read()


def read_text(path: str, options=None, encoding: str = "utf-8") -> str:
    return read_bytes(path, options).decode(encoding)


@contextmanager
def open_output(path: str, options=None) -> Iterator:
    """A binary stream for writing; parent folders are created. An object store publishes the
    object when the stream closes; a local file is written beside the target and renamed."""
    fs, inner = resolve(path, options)
    local = isinstance(fs, pafs.LocalFileSystem)
    target = inner + f".tmp-{os.getpid()}" if local else inner
    with access(path, "write", options):
        if local:  # an object store has no folders to create (pyarrow would add marker objects)
            fs.create_dir(posixpath.dirname(inner), recursive=True)
        out = fs.open_output_stream(target)
    try:
        with access(path, "write", options):
            yield out
            out.close()
        if local:
            os.replace(target, inner)
    except BaseException:
        if not out.closed:
            out.close()
        if local and os.path.exists(target):
            os.remove(target)
        raise


def write_bytes(path: str, data: bytes, options=None) -> None:
    with open_output(path, options) as f:
        f.write(data)


def write_text(path: str, text: str, options=None) -> None:
    write_bytes(path, text.encode("utf-8"), options)


def makedirs(path: str, options=None) -> None:
    fs, inner = resolve(path, options)
    if not isinstance(fs, pafs.LocalFileSystem):
        return  # object stores have no folders
    with access(path, "create folder", options):
        fs.create_dir(inner, recursive=True)


def delete_dir(path: str, options=None, missing_ok: bool = True) -> None:
    fs, inner = resolve(path, options)
    try:
        with access(path, "delete", options):
            if isinstance(fs, pafs.LocalFileSystem):
                fs.delete_dir(inner)
            else:  # delete_dir would leave a marker object for the parent "folder"
                if not missing_ok and fs.get_file_info(inner).type == pafs.FileType.NotFound:
                    raise FileNotFoundError(path)
                fs.delete_dir_contents(inner, missing_dir_ok=True)
    except PathNotFound:
        if not missing_ok:
            raise


def delete_file(path: str, options=None) -> None:
    fs, inner = resolve(path, options)
    with access(path, "delete", options):
        fs.delete_file(inner)


def download(src: str, dst: str, options=None) -> str:
    """Copy file or folder ``src`` to the local path ``dst`` (a folder keeps its layout)."""
    fs, inner = resolve(src, options)
    kind = info(src, options).type
    if kind == pafs.FileType.NotFound:
        raise translate(FileNotFoundError(src), src, "read", options)
    os.makedirs(os.path.dirname(os.path.abspath(dst)) or ".", exist_ok=True)
    with access(src, "download", options):
        if kind == pafs.FileType.Directory:
            pafs.copy_files(inner, os.path.abspath(dst), source_filesystem=fs,
                            destination_filesystem=pafs.LocalFileSystem())
        else:
            with fs.open_input_stream(inner) as i, open(dst, "wb") as o:
                shutil.copyfileobj(i, o, 1 << 20)
    return dst


def upload(src: str, dst: str, options=None) -> str:
    """Copy the local file or folder ``src`` to ``dst`` (any of our paths)."""
    fs, inner = resolve(dst, options)
    with access(dst, "upload", options):
        local = isinstance(fs, pafs.LocalFileSystem)
        if os.path.isdir(src):
            pafs.copy_files(os.path.abspath(src), inner, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)
        else:
            if local:
                fs.create_dir(posixpath.dirname(inner), recursive=True)
            with open(src, "rb") as i, fs.open_output_stream(inner) as o:
                shutil.copyfileobj(i, o, 1 << 20)
    return dst


# --------------------------------------------------------------------------- task-side writers and readers


def _task_file(folder: str, ext: str) -> str:
    """A name fixed by the task's partition, so a retried or speculative attempt overwrites the
    same object instead of adding a second copy of the partition."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return join(folder, f"part-{ctx.partitionId() if ctx else 0:05d}.{ext}")


class _ParquetSink:
    def __init__(self, stream, schema):
        import pyarrow.parquet as pq

        self.stream, self.writer = stream, pq.ParquetWriter(stream, schema, compression="snappy")

    def write(self, batch) -> None:
        self.writer.write_batch(batch)

    def close(self) -> None:
        self.writer.close()
        self.stream.close()


class _JsonLinesSink:
    def __init__(self, stream, schema):
        self.stream = stream

    def write(self, batch) -> None:
        import json

        self.stream.write("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n"
                                  for r in batch.to_pylist()).encode("utf-8"))

    def close(self) -> None:
        self.stream.close()


def _write_task(batches, folder: str, ext: str, sink_type, options):
    import pyarrow as pa

    path, sink, stream, rows = _task_file(folder, ext), None, None, 0
    try:
        for b in batches:
            if b.num_rows == 0:
                continue
            with access(path, "write", options):
                if sink is None:
                    fs, inner = resolve(path, options)
                    stream = fs.open_output_stream(inner)
                    sink = sink_type(stream, b.schema)
                sink.write(b)
            rows += b.num_rows
        if sink is not None:
            with access(path, "write", options):
                sink.close()
    except BaseException:
        if stream is not None and not stream.closed:
            stream.close()
        raise
    if rows:
        yield pa.RecordBatch.from_pydict({"path": [path], "rows": [rows]})


def write_parquet_task(batches, folder: str, options=None):
    """``mapInArrow`` body: this partition's rows as one Parquet file under ``folder``;
    yields one (path, rows) record (none for an empty partition)."""
    return _write_task(batches, folder, "parquet", _ParquetSink, options)


def write_jsonl_task(batches, folder: str, options=None):
    """``mapInArrow`` body: this partition's rows as one JSON-lines file (nulls written as null),
    named ``.json`` as Spark's JSON writer names its files."""
    return _write_task(batches, folder, "json", _JsonLinesSink, options)


def read_parquet_task(batches, schema_bytes: bytes, options=None):
    """``mapInArrow`` body over a frame of file paths: each file's rows in ``schema``'s columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.ipc.read_schema(pa.py_buffer(schema_bytes))
    for b in batches:
        for path in b.column("path").to_pylist():
            fs, inner = resolve(path, options)
            with access(path, "read", options):
                pf = pq.ParquetFile(fs.open_input_file(inner))
                for rb in pf.iter_batches(batch_size=8192, columns=schema.names):
                    yield from pa.Table.from_batches([rb]).select(schema.names).cast(schema).to_batches()

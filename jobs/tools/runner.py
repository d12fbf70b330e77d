"""What the standalone tools (``nr dedup``, ``nr decontaminate``) share: their input read in
this process when it is small and local (no Spark started), or on Spark otherwise, the same
kernels either way; and their storage arguments (ARCHITECTURE.md §7, §8)."""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
from typing import Optional


from jobs.common.config import StorageConfig
from jobs.common.lsh import NotInProcess
from udfs import fs


def read_in_process(path: str, fmt: str, columns: list[str], max_bytes: int):
    """The columns of a local jsonl / parquet / delta input as an Arrow table, or
    ``NotInProcess`` when it is remote, larger than ``max_bytes`` on disk, or unreadable here
    (Spark, whose readers are more lenient, then reads it)."""
    import pyarrow as pa

    if fs.is_remote(path) or not os.path.exists(path):
        raise NotInProcess("not a local path")
    size = os.path.getsize(path) if os.path.isfile(path) else sum(
        os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)
    if size > max_bytes:
        raise NotInProcess(f"{size} bytes on disk")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(path) if os.path.isfile(path) else None
            names = schema.names if schema is not None else pq.ParquetDataset(path).schema.names
            missing = [c for c in columns if c not in names]
            if missing:
                return _missing(path, missing, names)
            return pq.read_table(path, columns=columns)
        if fmt == "jsonl":
            import pyarrow.json as pj

            if not os.path.isfile(path):
                raise NotInProcess("a jsonl folder")
            table = pj.read_json(path)
        elif fmt == "delta":
            from deltalake import DeltaTable

            table = DeltaTable(path).to_pyarrow_table()
        else:
            raise ValueError(f"unknown input format {fmt!r}: jsonl, parquet or delta")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
        raise NotInProcess(f"read here: {e}") from None
    missing = [c for c in columns if c not in table.column_names]
    return _missing(path, missing, table.column_names) if missing else table.select(columns)


def tool_parser(prog: str, description: str, output_help: str, max_rows: int,
                text_col: dict) -> argparse.ArgumentParser:
    """The arguments every standalone tool takes: its input table, key and text columns, output
    folder, Spark master, the in-process choice and storage options (``text_col``: how
    ``--text-col`` is declared)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--input", required=True, help="file or folder")
    p.add_argument("--input-format", choices=["jsonl", "parquet", "delta"], required=True)
    p.add_argument("--id-col", required=True, help="a key column (cast to string)")
    p.add_argument("--text-col", required=True, **text_col)
    p.add_argument("--output", required=True, help=output_help)
    p.add_argument("--master", default=None, help="Spark master for a local run (default local[<cores>])")
    add_engine_args(p, max_rows)
    add_storage_args(p)
    return p


def add_engine_args(p: argparse.ArgumentParser, max_rows: int) -> None:
    """The command-line choice between the in-process path and Spark."""
    p.add_argument("--engine", choices=["auto", "in-process", "spark"], default="auto",
                   help="auto: inputs up to --in-process-max-rows rows (and --in-process-max-mb on disk) run in "
                   "this process without starting Spark, same kernels and same output; larger ones on Spark")
    p.add_argument("--in-process-max-rows", type=int, default=max_rows)
    p.add_argument("--in-process-max-mb", type=int, default=256)


def input_in_process(args: argparse.Namespace, columns: list[Optional[str]]):
    """The command's input (these columns) as an Arrow table for the in-process path, or
    ``NotInProcess`` (remote output, too large, unreadable here)."""
    if fs.is_remote(args.output):
        raise NotInProcess("the output is not a local folder")
    table = read_in_process(args.input, args.input_format, list(dict.fromkeys(c for c in columns if c)),
                            args.in_process_max_mb << 20)
    if args.engine == "auto" and table.num_rows > args.in_process_max_rows:
        raise NotInProcess(f"{table.num_rows} rows > --in-process-max-rows {args.in_process_max_rows}")
    return table


def refuse_in_process(args: argparse.Namespace, e: Exception) -> int:
    print(f"error: --engine in-process: {args.input}: {e}", file=sys.stderr)
    return 2


def _missing(path: str, missing: list[str], names: list[str]):
    raise ValueError(f"{path} has no column {', '.join(missing)}; columns: {', '.join(sorted(names))}")


def write_in_process(table, folder: str) -> None:
    """``folder`` replaced by one Parquet file holding ``table`` (Spark's overwrite of a folder)."""
    import pyarrow.parquet as pq

    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    pq.write_table(table, os.path.join(folder, "part-00000.parquet"))


def add_storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="storage option for s3:// paths, as in storage.storage_options (AWS_REGION, "
                        "AWS_ENDPOINT_URL, ...); credentials come from the environment")


def storage_from_args(args) -> StorageConfig:
    opts = {}
    for kv in args.storage_option:
        if "=" not in kv:
            raise ValueError(f"--storage-option {kv!r}: expected KEY=VALUE")
        k, v = kv.split("=", 1)
        opts[k.strip()] = v
    return StorageConfig(root="/", storage_options=opts)


def local_checkpoints() -> str:
    """Checkpoints in a temporary folder of this machine, removed when the command ends: they are
    scratch, and the user's output folder gets only what the tool writes."""
    folder = tempfile.mkdtemp(prefix="nr-checkpoints-")
    atexit.register(shutil.rmtree, folder, True)
    return folder

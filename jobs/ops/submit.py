"""``nr submit emr``: run the pipeline as a step on a running EMR cluster (boto3 ``add_job_flow_steps``).

    nr submit emr --cluster-id j-XXXXXXXX --config conf/emr.yaml [--stages a,b] [--set k=v ...]
                  [--staging s3://bucket/prefix] [--region R] [--wait] [--dry-run]

The config is validated here first (a bad key fails before anything reaches the cluster), then
it and the pipeline's entry script are uploaded to ``--staging`` (default
``<storage.root>/_submit/<timestamp>``) through the filesystem layer, and one
``command-runner.jar`` step runs ``spark-submit --deploy-mode cluster`` on them; the driver
reads its config straight from S3. The cluster must have the package installed on every node:
``conf/emr-bootstrap.sh`` as a bootstrap action does that, with the versions ``setup.py`` pins.
Credentials come from the environment or the instance profile, as for every AWS call of ours.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from typing import Optional

from jobs.common.config import ConfigError, load_config
from jobs.stages import NAMES
from udfs import fs

ACTIVE_STATES = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")


class SubmitError(RuntimeError):
    pass

# The step runs the pipeline's one entry script: spark-submit jobs/pipeline.py --config F [--stages a,b].
ENTRY_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipeline.py")


def spark_submit_args(entry: str, config: str, stages: Optional[str], overrides: list[str],
                      spark_args: list[str]) -> list[str]:
    """The step's command line: spark-submit in cluster mode on the staged entry and config."""
    args = ["spark-submit", "--deploy-mode", "cluster", *spark_args, entry, "--config", config]
    if stages:
        args += ["--stages", stages]
    for o in overrides:
        args += ["--set", o]
    return args


def emr_step(name: str, args: list[str], action_on_failure: str = "CONTINUE") -> dict:
    return {"Name": name, "ActionOnFailure": action_on_failure,
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args}}


def _emr_client(region: Optional[str]):
    try:
        import boto3
    except ImportError as e:
        raise SubmitError("nr submit emr needs boto3: pip install 'natural-reasoning-spark[aws]'") from e
    return boto3.client("emr", **({"region_name": region} if region else {}))


def _check_cluster(emr, cluster_id: str) -> str:
    try:
        state = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]
    except Exception as e:
        code = getattr(e, "response", {}).get("Error", {}).get("Code", type(e).__name__)
        raise SubmitError(f"cluster {cluster_id}: cannot be described ({code}); check the id, the region "
                          f"({emr.meta.region_name}) and the credentials") from None
    if state not in ACTIVE_STATES:
        raise SubmitError(f"cluster {cluster_id} is {state}; a step needs a cluster in {', '.join(ACTIVE_STATES)}")
    return state


def stage_files(config_path: str, entry: str, conf: str, options: dict) -> None:
    """Upload the entry script and the config to where the step reads them."""
    with open(ENTRY_SCRIPT, "rb") as f:
        fs.write_bytes(entry, f.read(), options)
    fs.write_text(conf, fs.read_text(str(config_path), options), options)


def submit_emr(cluster_id: str, config_path: str, overrides: list[str], stages: Optional[str] = None,
               staging: Optional[str] = None, region: Optional[str] = None, spark_args: Optional[list[str]] = None,
               action_on_failure: str = "CONTINUE", name: Optional[str] = None, dry_run: bool = False,
               emr=None) -> dict:
    """Validate, stage and add the step. Returns {"step": ..., "step_id": ... (None for a dry run)}."""
    cfg = load_config(config_path, overrides)  # fail here, not on the cluster
    if stages:
        unknown = [s for s in stages.split(",") if s.strip() and s.strip() not in NAMES]
        if unknown:
            raise SubmitError(f"unknown stage(s) {unknown}; stages: {', '.join(NAMES)}")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    staging = (staging or fs.join(cfg.storage.root, "_submit")).rstrip("/") + "/" + stamp
    if not fs.is_s3(staging):
        raise SubmitError(f"--staging {staging}: EMR steps read their files from S3; give an s3:// prefix")
    options = dict(cfg.storage.storage_options)
    step_name = name or f"natural-reasoning {stages or 'pipeline'} {stamp}"
    entry, conf = fs.join(staging, "pipeline.py"), fs.join(staging, os.path.basename(str(config_path)))
    step = emr_step(step_name, spark_submit_args(entry, conf, stages, overrides, spark_args or []), action_on_failure)
    if dry_run:
        return {"step": step, "step_id": None}
    emr = emr or _emr_client(region or fs.s3_settings(options)["region"])
    _check_cluster(emr, cluster_id)
    stage_files(config_path, entry, conf, options)
    step_id = emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"][0]
    return {"step": step, "step_id": step_id}


def wait_for_step(emr, cluster_id: str, step_id: str, poll_s: float = 30.0) -> str:
    while True:
        st = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"]
        if st["State"] in ("COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED"):
            return st["State"]
        time.sleep(poll_s)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="nr submit", description="Submit the pipeline to a cluster.")
    sub = p.add_subparsers(dest="target", required=True)
    e = sub.add_parser("emr", help="add a spark-submit step to a running EMR cluster")
    e.add_argument("--cluster-id", required=True, help="j-XXXXXXXX")
    e.add_argument("--config", "-c", required=True, help="pipeline YAML (local or s3://)")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    e.add_argument("--stages", default=None, help="comma-separated subset of stages")
    e.add_argument("--staging", default=None, help="s3:// prefix for the step's files (default <storage.root>/_submit)")
    e.add_argument("--region", default=None, help="default: storage_options' AWS_REGION, else the environment")
    e.add_argument("--spark-arg", action="append", default=[], help="extra spark-submit argument (repeatable)")
    e.add_argument("--action-on-failure", default="CONTINUE", choices=["CONTINUE", "CANCEL_AND_WAIT", "TERMINATE_CLUSTER"])
    e.add_argument("--name", default=None)
    e.add_argument("--wait", action="store_true", help="poll until the step ends; exit 1 unless it completed")
    e.add_argument("--dry-run", action="store_true", help="print the step, upload nothing, add nothing")
    args = p.parse_args(argv)
    try:
        emr = None if args.dry_run else _emr_client(args.region)
        out = submit_emr(args.cluster_id, args.config, args.overrides, args.stages, args.staging, args.region,
                         args.spark_arg, args.action_on_failure, args.name, args.dry_run, emr=emr)
    except (ConfigError, SubmitError, fs.StorageAccessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(out["step"], indent=2))
    if out["step_id"] is None:
        return 0
    print(f"step {out['step_id']} added to {args.cluster_id}")
    if args.wait:
        state = wait_for_step(emr, args.cluster_id, out["step_id"])
        print(f"step {out['step_id']}: {state}")
        return 0 if state == "COMPLETED" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

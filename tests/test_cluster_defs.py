"""Every cluster definition in the repository agrees with setup.py, and `nr submit emr` adds its
step through boto3 against moto's EMR (server mode, 127.0.0.1)."""
from __future__ import annotations

import json
import os
import re
import shlex
from unittest import mock

import pytest
import yaml
from packaging.requirements import Requirement

from jobs.common.config import load_config
from tests.conftest import REPO
from tests.moto_s3 import assert_clear, s3, s3_server  # noqa: F401


def setup_kwargs() -> dict:
    import setuptools

    with mock.patch.object(setuptools, "setup") as fake, open(os.path.join(REPO, "setup.py")) as f:
        exec(compile(f.read(), "setup.py", "exec"), {"__name__": "__main__"})
    return fake.call_args.kwargs


SETUP = setup_kwargs()


def pinned() -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in SETUP["install_requires"]]
    reqs += [Requirement(r) for extra in SETUP["extras_require"].values() for r in extra]
    out: dict[str, Requirement] = {}
    for r in reqs:
        out.setdefault(r.name.lower(), r)
    return out


def assert_matches_setup(spec: str, where: str) -> None:
    """A package spec in a definition file must be the very spec setup.py gives that package."""
    r = Requirement(spec)
    known = pinned()
    assert r.name.lower() in known, f"{where}: {r.name} is not a requirement of setup.py"
    assert r.specifier == known[r.name.lower()].specifier, (
        f"{where}: {spec!r} but setup.py says {str(known[r.name.lower()])!r}")


WHEEL = f"{SETUP['name'].replace('-', '_')}-{SETUP['version']}-py3-none-any.whl"


def test_databricks_job_matches_setup():
    with open(os.path.join(REPO, "conf", "databricks-job.json")) as f:
        job = json.load(f)
    (task,) = job["tasks"]
    libs = task["libraries"]
    assert any(lib.get("whl", "").endswith("/" + WHEEL) for lib in libs), f"the wheel is {WHEEL}"
    for lib in libs:
        if "pypi" in lib:
            assert_matches_setup(lib["pypi"]["package"], "conf/databricks-job.json")
    wt = task["python_wheel_task"]
    assert wt["package_name"] == SETUP["name"].replace("-", "_")
    assert any(e.startswith(wt["entry_point"] + "=") for e in SETUP["entry_points"]["console_scripts"])
    assert wt["parameters"][0] == "run" and os.path.basename(wt["parameters"][2]) == "databricks.yaml"
    gpu_conf(job["job_clusters"][0]["new_cluster"]["spark_conf"], "conf/databricks-job.json")


def test_databricks_bundle_matches_setup_and_the_job():
    with open(os.path.join(REPO, "databricks.yml")) as f:
        bundle = yaml.safe_load(f)
    job = bundle["resources"]["jobs"]["natural_reasoning"]
    (task,) = job["tasks"]
    assert task["python_wheel_task"]["package_name"] == SETUP["name"].replace("-", "_")
    assert task["python_wheel_task"]["parameters"][:3] == ["run", "--config",
                                                         "${workspace.file_path}/conf/databricks.yaml"]
    for lib in task["libraries"]:
        if "pypi" in lib:
            assert_matches_setup(lib["pypi"]["package"], "databricks.yml")
    assert {"dev", "prod"} <= set(bundle["targets"]) and "wheel" in bundle["artifacts"]
    cluster = job["job_clusters"][0]["new_cluster"]
    assert "gpu" in cluster["spark_version"]
    with open(os.path.join(REPO, "conf", "databricks-job.json")) as f:
        plain = json.load(f)["job_clusters"][0]["new_cluster"]
    assert cluster["spark_conf"] == plain["spark_conf"], "the bundle and the job JSON configure one cluster"
    stages = bundle["variables"]["stages"]["default"].split(",")
    assert stages == load_config(os.path.join(REPO, "conf", "databricks.yaml")).pipeline.stages


def gpu_conf(conf: dict, where: str) -> None:
    assert float(conf["spark.task.resource.gpu.amount"]) * 1 <= float(conf["spark.executor.resource.gpu.amount"])
    assert conf["spark.dynamicAllocation.enabled"] == "false", f"{where}: stage-level GPU profiles need it off"
    assert conf["spark.python.worker.reuse"] == "true", f"{where}: one engine per Python worker needs reuse"
    assert conf["spark.sql.parquet.outputTimestampType"] == "TIMESTAMP_MICROS", where


def test_emr_configurations_and_bootstrap_match_setup():
    with open(os.path.join(REPO, "conf", "emr-configurations.json")) as f:
        classifications = {c["Classification"]: c for c in json.load(f)}
    spark = classifications["spark-defaults"]["Properties"]
    gpu_conf(spark, "conf/emr-configurations.json")
    assert spark["spark.executor.resource.gpu.discoveryScript"].endswith(".sh")
    assert "yarn.io/gpu" in classifications["yarn-site"]["Properties"]["yarn.resource-types"]
    with open(os.path.join(REPO, "conf", "emr-bootstrap.sh")) as f:
        script = f.read()
    install = re.search(r"pip install(.*?)(?:\n\S|\Z)", script.replace("\\\n", " "), re.S).group(1)
    specs = [a for a in shlex.split(install) if not a.startswith("-")]
    wheel = [a for a in specs if ".whl" in a or "WHEEL" in a]
    assert len(wheel) == 1 and "[aws,gpu]" in wheel[0]
    for spec in specs:
        if spec not in wheel:
            assert_matches_setup(spec, "conf/emr-bootstrap.sh")
    assert "pyspark" not in script.split("pip install", 1)[1], "EMR brings its own Spark"


# --------------------------------------------------------------------------- nr submit emr


@pytest.fixture()
def emr_cluster(s3, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)  # boto3's EMR client and pyarrow's S3 alike
    emr = boto3.client("emr", region_name="us-east-1")
    cluster = emr.run_job_flow(
        Name="nr-test", ReleaseLabel="emr-7.5.0", Applications=[{"Name": "Spark"}],
        Instances={"InstanceGroups": [{"InstanceRole": "MASTER", "InstanceType": "m5.xlarge", "InstanceCount": 1}],
                   "KeepJobFlowAliveWhenNoSteps": True},
        JobFlowRole="EMR_EC2_DefaultRole", ServiceRole="EMR_DefaultRole")["JobFlowId"]
    return emr, cluster


def test_submit_emr_adds_a_spark_submit_step_and_stages_its_files(s3, emr_cluster, capsys):
    from jobs.cli import main

    emr, cluster = emr_cluster
    code = main(["submit", "emr", "--cluster-id", cluster, "--config", os.path.join(REPO, "conf", "emr.yaml"),
                 "--stages", "ingest,annotate", "--set", "pipeline.chunk_rows=500",
                 "--staging", s3.uri("steps"), "--region", "us-east-1"])
    assert code == 0, capsys.readouterr().err
    steps = emr.list_steps(ClusterId=cluster)["Steps"]
    assert len(steps) == 1
    args = steps[0]["Config"]["Args"]
    assert args[:4] == ["spark-submit", "--deploy-mode", "cluster", args[3]] and args[3].endswith("/pipeline.py")
    assert args[4:] == ["--config", args[5], "--stages", "ingest,annotate", "--set", "pipeline.chunk_rows=500"]
    assert steps[0]["Config"]["Jar"] == "command-runner.jar"
    keys = s3.keys("steps/")
    assert any(k.endswith("/pipeline.py") for k in keys) and any(k.endswith("/emr.yaml") for k in keys)
    assert load_config(args[5]).pipeline.chunk_rows == 20000, "the driver reads the staged config from S3"


def test_submit_emr_refuses_bad_input_before_touching_the_cluster(s3, emr_cluster, capsys):
    from jobs.ops.submit import main

    emr, cluster = emr_cluster
    conf = os.path.join(REPO, "conf", "emr.yaml")
    base = ["emr", "--cluster-id", cluster, "--config", conf, "--staging", s3.uri("steps"), "--region", "us-east-1"]
    assert main(base + ["--set", "pipeline.nope=1"]) == 2
    assert "pipeline.nope" in capsys.readouterr().err
    assert main(base + ["--stages", "ingest,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["emr", "--cluster-id", "j-NOSUCHCLUSTER", "--config", conf, "--staging", s3.uri("steps"),
                 "--region", "us-east-1"]) == 2
    assert "j-NOSUCHCLUSTER" in capsys.readouterr().err
    emr.terminate_job_flows(JobFlowIds=[cluster])
    assert main(base) == 2
    assert "TERMINATED" in capsys.readouterr().err
    assert emr.list_steps(ClusterId=cluster)["Steps"] == [] and s3.keys("steps/") == []


def test_submit_emr_dry_run_prints_the_step(capsys):
    from jobs.ops.submit import main

    assert main(["emr", "--cluster-id", "j-X", "--config", os.path.join(REPO, "conf", "emr.yaml"),
                 "--staging", "s3://bucket/steps", "--dry-run"]) == 0
    step = json.loads(capsys.readouterr().out)
    assert step["HadoopJarStep"]["Args"][0] == "spark-submit"

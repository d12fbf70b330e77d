"""A real S3 API on this machine: moto's server mode on 127.0.0.1 at a random port.

``s3_server`` (module scope) starts ``ThreadedMotoServer`` and points the AWS environment at
fake credentials; ``s3`` gives a fresh bucket per test with the ``storage_options`` that reach
it. Spark's Python workers take their environment from ``SparkContext.environment``, so the
credentials go there too (the JVM started before this module set them).
"""
from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass

import pytest

CREDS = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
         "AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": "us-east-1"}


@dataclass
class S3:
    endpoint: str
    bucket: str
    client: object

    @property
    def options(self) -> dict:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}".rstrip("/")

    def put(self, key: str, body) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


@pytest.fixture(scope="module")
def s3_server():
    pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in CREDS.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        endpoint = f"http://{host}:{port}"
        yield endpoint, boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    server.stop()


@pytest.fixture()
def s3(s3_server) -> S3:
    endpoint, client = s3_server
    bucket = f"nr-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3(endpoint, bucket, client)


@pytest.fixture()
def spark_s3(spark, s3_server, monkeypatch):
    """The session, with the fake credentials in its Python workers' environment."""
    env = spark.sparkContext.environment
    for k, v in CREDS.items():
        monkeypatch.setitem(env, k, v)
    return spark


def deny_unknown_keys(monkeypatch) -> None:
    """moto checks signatures from now on (this test only): unknown access keys are refused."""
    import moto.settings

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)


def assert_clear(err: BaseException, path: str, *words: str) -> None:
    msg = str(err)
    assert path in msg, msg
    for w in words:
        assert w in msg, msg
    for secret in (CREDS["AWS_SECRET_ACCESS_KEY"], "wrong-secret-value", os.environ.get("AWS_SECRET_ACCESS_KEY")):
        if secret:
            assert secret not in msg, msg

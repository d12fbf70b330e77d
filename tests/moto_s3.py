"""A real S3 API on this machine: moto's server mode on 127.0.0.1 at a random port.

``s3_server`` (module scope) starts ``ThreadedMotoServer`` and points the AWS environment at
fake credentials; ``s3`` gives a fresh bucket per test with the ``storage_options`` that reach
it. Spark's Python workers take their environment from ``SparkContext.environment``, so the
credentials go there too (the JVM started before this module set them).
"""
from __future__ import annotations

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


def _serve(queue) -> None:
    """Child process: moto's threaded server on a random port of 127.0.0.1, until terminated."""
    import logging
    import threading

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    queue.put(server.get_host_and_port())
    threading.Event().wait()


@pytest.fixture(scope="module")
def s3_server():
    """The server runs in a child process: some delta-rs calls (``is_deltatable``) hold the GIL
    while they wait for the network, which would starve a server thread in this process."""
    # Only look for it: importing moto.server here would import flask into the test process,
    # and vLLM's kernel registration (which walks every loaded module) trips over flask's
    # request proxies. The server itself is imported in the child process.
    import importlib.util
    import multiprocessing as mp

    for mod in ("moto", "flask"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip("moto[server] is in the dev extra")

    import boto3

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(queue,), daemon=True)
    proc.start()
    try:
        host, port = queue.get(timeout=120)
        with pytest.MonkeyPatch.context() as mp_:
            for k, v in CREDS.items():
                mp_.setenv(k, v)
            mp_.delenv("AWS_PROFILE", raising=False)
            mp_.delenv("AWS_SESSION_TOKEN", raising=False)
            endpoint = f"http://{host}:{port}"
            yield endpoint, boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    finally:
        proc.terminate()
        proc.join(timeout=20)
    import sys

    assert "flask" not in sys.modules, "moto's server (flask) was imported into the test process"


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


@pytest.fixture()
def deny_unknown_keys(s3_server):
    """Call it to make moto check signatures (unknown access keys are refused) until the test ends."""
    import urllib.request

    endpoint = s3_server[0]

    def set_count(value: str) -> None:
        req = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=value.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})  # a form body would be parsed away
        urllib.request.urlopen(req, timeout=30).read()

    yield lambda: set_count("0")
    set_count("inf")


def assert_clear(err: BaseException, path: str, *words: str) -> None:
    msg = str(err)
    assert path in msg, msg
    for w in words:
        assert w in msg, msg
    for secret in (CREDS["AWS_SECRET_ACCESS_KEY"], "wrong-secret-value", os.environ.get("AWS_SECRET_ACCESS_KEY")):
        if secret:
            assert secret not in msg, msg

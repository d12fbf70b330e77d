"""The local SparkSession's JVM settings (jobs/common/spark.py)."""
from jobs.common.config import SparkConfig


def test_local_jvm_gets_the_configured_java_options(spark):
    # The session fixture is built with SparkConfig's defaults apart from size settings.
    args = list(spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    wanted = SparkConfig().local_java_options.split()
    assert wanted and all(opt in args for opt in wanted), args
    # derby's home stays set beside them (one extraJavaOptions string carries both).
    assert any(a.startswith("-Dderby.system.home=") for a in args)


def _zip(path, members: dict) -> str:
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return str(path)


def _package(root, name: str, version: str) -> str:
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "version.py").write_text(f"__version__: str = '{version}'\n")
    return str(root)


def test_unzipped_path_drops_only_archives_that_add_nothing(tmp_path):
    from udfs.worker_daemon import unzipped_path

    jar = _zip(tmp_path / "spark-core.jar", {"org/apache/X.class": "x"})
    py_jar = _zip(tmp_path / "with-python.jar", {"mod.py": "x = 1"})
    pyspark_zip = _zip(tmp_path / "pyspark.zip", {"pyspark/__init__.py": "", "pyspark/version.py": "__version__: str = '4.1.4'"})
    py4j_zip = _zip(tmp_path / "py4j-0.10.9.9-src.zip", {"py4j/__init__.py": "", "py4j/version.py": "__version__ = '0.10.9.9'"})
    site = _package(tmp_path / "site", "pyspark", "4.1.4")
    _package(tmp_path / "site", "py4j", "0.10.9.9")
    other = _package(tmp_path / "other", "pyspark", "3.5.1")
    _package(tmp_path / "other", "py4j", "0.10.9.9")

    # Same versions in a directory: both zips and the class-only jar go; a jar with Python stays.
    assert unzipped_path([pyspark_zip, py4j_zip, jar, py_jar, site]) == [py_jar, site]
    # Another pyspark version in the directory (a cluster's own Spark): the zips stay.
    assert unzipped_path([pyspark_zip, py4j_zip, jar, other]) == [pyspark_zip, py4j_zip, other]
    # No directory copy at all: the zips are the only pyspark there is.
    assert unzipped_path([pyspark_zip, py4j_zip]) == [pyspark_zip, py4j_zip]


def test_local_workers_run_without_archive_importers_or_full_collections(spark):
    """The local session's Python workers come from ``udfs.worker_daemon``: pyspark from the
    virtual environment rather than pyspark.zip, no zip importer for Spark's per-task
    ``importlib.invalidate_caches()`` to re-read, and the preloaded modules frozen out of
    the per-task ``gc.collect()``."""
    assert spark.conf.get("spark.python.daemon.module") == "udfs.worker_daemon"

    def probe(batches):
        import gc
        import sys
        import zipimport

        import pandas as pd
        import pyspark

        zips = [k for k, v in sys.path_importer_cache.items() if isinstance(v, zipimport.zipimporter)]
        for _ in batches:
            yield pd.DataFrame({"zips": [len(zips)], "pyspark": [pyspark.__file__], "frozen": [gc.get_freeze_count()]})

    row = spark.range(1).mapInPandas(probe, "zips int, pyspark string, frozen long").collect()[0]
    assert row["zips"] == 0, row
    assert ".zip" not in row["pyspark"], row
    assert row["frozen"] > 10_000, row

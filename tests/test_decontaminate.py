"""13-gram decontamination: the lm-eval rule by hand-worked examples, then against the real
benchmark files in ../shared/data and against lm-eval's own janitor."""
import csv
import json
import os
import random

import pytest

from jobs.common.benchmarks import BUILTIN, BUILTIN_BY_NAME, MMLU_STEM, BenchmarkMissing, load_benchmark, resolve
from jobs.common.config import BenchmarkConfig, ConfigError, load_config
from jobs.common.contamination import build_benchmark_index, find_contamination
from tests.conftest import SHARED_DATA
from udfs import ngrams

BENCH = os.path.join(SHARED_DATA, "benchmarks")
NO_SHARED = ("../shared/data/benchmarks not present: parity with the raw benchmark files is not checked "
             "(the shipped index is tested without them)")
needs_benchmarks = pytest.mark.skipif(not os.path.isdir(BENCH), reason=NO_SHARED)


# --------------------------------------------------------------------------- pure rule


def test_normalization_is_lm_evals():
    # ASCII letters lower-cased, the 32 ASCII punctuation marks deleted, everything else kept.
    assert ngrams.normalize("Hello, World! (x+y)^2 — Café ÉTÉ") == "hello world xy2 — café ÉtÉ"
    assert ngrams.normalize("“Smart” quotes’ … ¿Qué?") == "“smart” quotes’ … ¿qué"
    assert ngrams.normalize(None) == "" and ngrams.normalize("") == ""
    # Whitespace is Python's: tabs, newlines, no-break and ideographic spaces all split.
    assert ngrams.tokens("a\tb\n c\u00a0d\u3000e\u2009f") == ["a", "b", "c", "d", "e", "f"]
    assert ngrams.tokens("x = 5, and -3") == ["x", "5", "and", "3"]


def test_doc_examples():
    import doctest

    assert doctest.testmod(ngrams).failed == 0


def test_ngrams_by_hand():
    words = " ".join(str(i) for i in range(20))
    grams = ngrams.ngrams(words, 13)
    assert len(grams) == 8 and grams[0] == " ".join(str(i) for i in range(13)) and grams[-1].endswith("19")
    assert ngrams.ngrams("The cat; the CAT!", 2) == ["the cat", "cat the", "the cat"]
    assert ngrams.positioned_ngrams("a b c d", 4) == [(0, "a b c d")]
    # Fewer than n tokens: the one whole-sequence gram; no tokens: nothing.
    assert ngrams.ngrams("Is 2+2 = 4?", 13) == [ngrams.WHOLE + "is 22 4"]
    assert ngrams.ngrams(" ?! ", 13) == [] and ngrams.ngrams(None, 13) == []


def test_split_first_is_the_janitors_window_rule():
    text = "one two = three four five"  # raw tokens: one two = three four five
    assert ngrams.ngrams(text, 3) == ["one two three", "two three four", "three four five"]
    # split_first: "=" is a dead token; windows that contain it never match.
    assert ngrams.positioned_ngrams(text, 3, "split_first") == [(3, "three four five")]
    assert ngrams.gram_at(text, 3, 3, "split_first") == "three four five"
    assert ngrams.gram_at(text, 1, 3) == "two three four"
    # A punctuation-only token still counts as nothing for the short-text test.
    assert ngrams.ngrams("a = b", 3, "split_first") == [ngrams.WHOLE + "a b"]
    with pytest.raises(ValueError, match="tokenize"):
        ngrams.ngrams("a b c", 2, "other")


def test_split_first_grams_are_a_subset_of_normalize_first():
    rng = random.Random(3)
    pieces = ["x", "=", "+", "Y,", "(z)", "—", "$", "--", "a.b", "é", "42"]
    for _ in range(300):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        assert set(ngrams.ngrams(text, 4, "split_first")) <= set(ngrams.ngrams(text, 4))


def test_hash_is_signed_64_bit_and_stable():
    h = ngrams.gram_hash("one two three")
    assert -(1 << 63) <= h < (1 << 63) and h == ngrams.gram_hash("one two three")
    assert ngrams.gram_hash("one two three") != ngrams.gram_hash("one two thre")


# --------------------------------------------------------------------------- benchmark definitions


@needs_benchmarks
def test_builtin_benchmarks_load():
    sizes = {b.name: load_benchmark(b, BENCH)["benchmark_item_id"].nunique() for b in BUILTIN}
    assert sizes == {"math": 5000, "gpqa": 198, "mmlu_pro": 12030, "mmlu_stem": sizes["mmlu_stem"]}
    assert len(MMLU_STEM) == 19 and 3000 < sizes["mmlu_stem"] < 4000
    stem = load_benchmark(BUILTIN_BY_NAME["mmlu_stem"], BENCH)
    assert {i.split("/")[0] for i in stem["benchmark_item_id"]} == set(MMLU_STEM)


def test_benchmarks_by_name_and_unknown_names(tmp_path):
    cfg = load_config(None, ["decontaminate.benchmarks=[math, gpqa_extended]"])
    assert [b.name for b in resolve(cfg.decontaminate.benchmarks)] == ["math", "gpqa_extended"]
    assert [b.name for b in resolve(None)] == ["math", "gpqa", "mmlu_pro", "mmlu_stem"]
    with pytest.raises(ConfigError, match="unknown built-in benchmark 'gsm8k'"):
        load_config(None, ["decontaminate.benchmarks=[gsm8k]"])


def test_subset_filter_and_list_fields(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": 1, "q": "Q one", "opts": ["A", "B"], "cat": "math"},
        {"id": 2, "q": "Q two", "opts": ["C"], "cat": "law"}]))
    b = BenchmarkConfig(name="t", path=str(p), text_fields=["q", "opts"], id_field="id", subset_field="cat",
                        subset_values=["math"])
    assert load_benchmark(b, "").values.tolist() == [["t", "1", "Q one"], ["t", "1", "A\nB"]]
    with pytest.raises(ValueError, match="subset_field 'topic'"):
        load_benchmark(b.model_copy(update={"subset_field": "topic"}), "")
    import pandas as pd

    pd.DataFrame({"question": ["P one", ""], "qid": ["p1", "p2"]}).to_parquet(tmp_path / "b.parquet")
    pq = BenchmarkConfig(name="p", format="parquet", path="{benchmarks_dir}/b.parquet", text_fields=["question"],
                         id_field="qid")
    assert load_benchmark(pq, str(tmp_path)).values.tolist() == [["p", "p1", "P one"]]


def test_unreachable_hub_benchmark_is_skipped_when_optional(monkeypatch):
    from jobs.common.benchmarks import load_benchmarks

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = BenchmarkConfig(name="hub", format="hf", path="no-such-org/no-such-dataset", text_fields=["q"])
    assert [(b.name, t) for b, t in load_benchmarks([hub.model_copy(update={"optional": True})], "")] == [("hub", None)]
    with pytest.raises(BenchmarkMissing, match="hub"):
        list(load_benchmarks([hub], ""))


# --------------------------------------------------------------------------- Spark: the broadcast join


# Two benchmarks of our own text, merged with the shipped index: the kernel's rules are
# tested on them with no benchmark file on disk (real benchmark text is only read by the
# parity tests, from ../shared).
HOUSE = {
    "house_a": ("a7", "A train leaves the station at 3 pm travelling at 60 km/h, and a second train leaves the same "
                "station at 4 pm at 90 km/h on a parallel track; if x = the hours after 4 pm, find x, and the "
                "distance from the station where the second train catches the first."),
    "house_b": ("b3", "Which of the following best explains why a copper kettle placed on a gas flame heats its "
                "water faster than a ceramic kettle of the same shape and wall thickness would under identical "
                "conditions in a cold kitchen?"),
}


def long_math_question():
    return HOUSE["house_a"]


def long_gpqa_question():
    return HOUSE["house_b"]


def house_definitions(folder) -> list[BenchmarkConfig]:
    defs = []
    for name, (item_id, text) in HOUSE.items():
        (folder / f"{name}.jsonl").write_text(json.dumps({"id": item_id, "q": text}) + "\n")
        defs.append(BenchmarkConfig(name=name, path="{benchmarks_dir}/" + f"{name}.jsonl", text_fields=["q"],
                                    id_field="id"))
    return defs


def paraphrase(text):
    """One word in every eight replaced: no 13 consecutive tokens survive."""
    return " ".join("banana" if i % 8 == 3 else w for i, w in enumerate(text.split()))


@pytest.fixture(scope="module")
def house_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("house")
    house_definitions(d)
    return d


@pytest.fixture(scope="module")
def bench(spark, house_dir):
    """The shipped index (no text read) merged with the two house benchmarks (read from files)."""
    idx = build_benchmark_index(spark, ["math", "gpqa", "mmlu_pro", "mmlu_stem", *house_definitions(house_dir)],
                                str(house_dir), 13, index="builtin")
    idx.ngrams.persist()
    return idx


@pytest.fixture(scope="module")
def raw_bench(spark):
    if not os.path.isdir(BENCH):
        pytest.skip(NO_SHARED)
    idx = build_benchmark_index(spark, BUILTIN, BENCH, 13)
    idx.ngrams.persist()
    return idx


def test_catches_verbatim_embedded_varied_partial_and_not_paraphrase(spark, bench):
    assert bench.checked == ["math", "gpqa", "mmlu_pro", "mmlu_stem", "house_a", "house_b"]
    assert all(v > 0 for v in bench.ngram_counts.values()) and bench.item_counts["gpqa"] == 198
    mid, mq = long_math_question()
    gid, gq = long_gpqa_question()
    partial_words = gq.split()[5:18]
    items = [
        (101, mq),
        (202, "Here is a nice exercise from my class. " + mq + " Please help, thanks!"),
        (303, mq.upper().replace(",", " ,").replace("$", "")),
        (404, "Consider this: " + " ".join(partial_words) + " and then stop."),
        (505, paraphrase(gq)),
        (606, "A completely original question about the thermal conductivity of a copper rod in winter"),
        (707, ""),
        (808, None),
    ]
    df = spark.createDataFrame(items, "id long, q string")
    got = find_contamination(df, "id", ["q"], bench).collect()
    flagged = {r.item_id for r in got}
    assert flagged == {"101", "202", "303", "404"}  # ids come back as the input's ids, cast to string
    by = {(r.item_id, r.benchmark, r.benchmark_item_id) for r in got}
    assert {("101", "house_a", mid), ("202", "house_a", mid), ("303", "house_a", mid), ("404", "house_b", gid)} <= by
    partial = next(r for r in got if r.item_id == "404" and r.benchmark == "house_b")
    assert partial.match_count == 1 and partial.matched_ngram == " ".join(ngrams.tokens(" ".join(partial_words)))
    verbatim = next(r for r in got if r.item_id == "101" and r.benchmark_item_id == mid)
    assert verbatim.match_count == len(set(ngrams.ngrams(mq, 13)))
    assert verbatim.matched_ngram == ngrams.ngrams(mq, 13)[0]  # the first matched 13-gram, in words


def test_split_first_matches_only_windows_without_punctuation_tokens(spark, bench):
    _, mq = long_math_question()
    spaced = " , ".join(mq.split())  # a "," token between every two words: every raw window is dead
    df = spark.createDataFrame([("v", mq), ("spaced", spaced)], "id string, q string")
    loose = {r.item_id for r in find_contamination(df, "id", ["q"], bench).collect()}
    janitor = {r.item_id for r in find_contamination(df, "id", ["q"], bench, tokenize="split_first").collect()}
    assert loose == {"v", "spaced"} and janitor == ({"v"} if ngrams.positioned_ngrams(mq, 13, "split_first")
                                                    else set())


def test_several_text_columns_and_min_matches(spark, bench):
    gid, gq = long_gpqa_question()
    words = gq.split()
    df = spark.createDataFrame([("a", "nothing to see here", " ".join(words[:13])),
                                ("b", " ".join(words[:14]), "nothing")], "id string, q string, ctx string")
    got = find_contamination(df, "id", ["q", "ctx"], bench).collect()
    assert {(r.item_id, r.benchmark_item_id) for r in got if r.benchmark == "house_b"} == {("a", gid), ("b", gid)}
    two = find_contamination(df, "id", ["q", "ctx"], bench, min_matches=2).collect()
    assert {r.item_id for r in two if r.benchmark == "house_b"} == {"b"}


def test_short_texts_match_on_their_whole_sequence(spark, tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_text(json.dumps({"id": "s1", "q": "What is the capital of France?"}) + "\n")
    b = BenchmarkConfig(name="toy", format="jsonl", path=str(p), text_fields=["q"], id_field="id")
    idx = build_benchmark_index(spark, [b], str(tmp_path), 13)
    items = spark.createDataFrame([("same", "what is the CAPITAL of france"),
                                   ("longer", "Tell me: what is the capital of France? I need it for a quiz."),
                                   ("other", "What is the capital of Spain?")], "id string, q string")
    got = find_contamination(items, "id", ["q"], idx).collect()
    assert [(r.item_id, r.benchmark_item_id, r.matched_ngram, r.match_count) for r in got] == [
        ("same", "s1", "what is the capital of france", 1)]


def test_missing_benchmark_is_an_error_unless_optional(spark, tmp_path):
    gone = BenchmarkConfig(name="gone", format="csv", path="{benchmarks_dir}/nope.csv", text_fields=["q"])
    with pytest.raises(BenchmarkMissing, match="nope.csv"):
        build_benchmark_index(spark, [gone], str(tmp_path), 13)
    (tmp_path / "here.csv").write_text("q\nthe only question in this benchmark file\n")
    here = BenchmarkConfig(name="here", format="csv", path="{benchmarks_dir}/here.csv", text_fields=["q"])
    idx = build_benchmark_index(spark, [gone.model_copy(update={"optional": True}), here], str(tmp_path), 13)
    assert idx.checked == ["here"] and idx.skipped == ["gone"] and idx.ngram_counts == {"here": 1}
    assert "skipped (optional, not found): gone" in idx.describe()


def test_stage_records_counts(spark, cfg, store, tmp_path):
    """The default config (the shipped index) plus a benchmark of one's own, merged."""
    from jobs.pipeline import run_stage

    _, mq = long_math_question()
    house = house_definitions(tmp_path)[0]
    qs = spark.createDataFrame([("q1", mq, "ok"), ("q2", "a clean question about rivers and lakes", "ok"),
                                ("q3", mq, "no_json")], "question_id string, question string, status string")
    store.overwrite("questions", qs)
    row = run_stage(cfg.model_copy(update={"decontaminate": cfg.decontaminate.model_copy(update={
        "benchmarks_dir": str(tmp_path), "benchmarks": ["math", "gpqa", "mmlu_pro", "mmlu_stem", house]})}),
        "decontaminate", spark=spark)
    c = row["counts"]
    assert c["in"] == 2 and c["dropped_contaminated"] == 1 and c["out"] == 1 and c["checked_benchmarks"] == 5
    assert c["contaminated_house_a"] == 1 and c["benchmark_ngrams_gpqa"] > 0
    assert all(c[f"contaminated_{b}"] == 0 for b in ("math", "gpqa", "mmlu_pro", "mmlu_stem"))
    assert row["metrics"]["contaminated_pct_house_a"] == 50.0 and row["metrics"]["contaminated_pct_gpqa"] == 0.0
    assert {r.item_id for r in store.read("contamination").collect()} == {"q1"}


def test_cli_writes_the_contamination_table(spark, tmp_path):
    from jobs.tools.decontaminate import cli_main

    mid, mq = long_math_question()
    house_definitions(tmp_path)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"key": 7, "text": mq}) + "\n" + json.dumps({"key": 8, "text": "clean words"}) + "\n")
    conf = tmp_path / "b.yaml"
    conf.write_text(f"benchmarks_dir: {tmp_path}\nbenchmarks: [math, {{name: house_a, format: jsonl, "
                    f"path: '{{benchmarks_dir}}/house_a.jsonl', text_fields: [q], id_field: id}}, {{name: extra, "
                    f"format: csv, path: '{{benchmarks_dir}}/absent.csv', text_fields: [q], optional: true}}]\n")
    assert cli_main(["--input", str(src), "--input-format", "jsonl", "--id-col", "key", "--text-col", "text",
                     "--output", str(tmp_path / "out"), "--benchmarks-config", str(conf)]) == 0
    rows = spark.read.parquet(str(tmp_path / "out" / "contamination")).collect()
    assert [(r.item_id, r.benchmark, r.benchmark_item_id) for r in rows] == [("7", "house_a", mid)]
    # A built-in name that is not in the index reads its files: none here, so a clear error.
    conf.write_text("benchmarks: [gpqa_main]\n")
    assert cli_main(["--input", str(src), "--input-format", "jsonl", "--id-col", "key", "--text-col", "text",
                     "--output", str(tmp_path / "out3"), "--benchmarks-config", str(conf)]) == 2
    conf.write_text("benchmarks: [math]\nngram_size: 13\n")
    assert cli_main(["--input", str(src), "--input-format", "jsonl", "--id-col", "key", "--text-col", "text",
                     "--output", str(tmp_path / "out2"), "--benchmarks-config", str(conf)]) == 2


# --------------------------------------------------------------------------- against lm-eval's janitor


def load_lm_eval_janitor():
    mod = ngrams.lm_eval_janitor()
    if mod is None:
        pytest.skip("lm-eval not installed: pip install --no-deps lm-eval==0.4.13")
    return mod


def mixed_items(seed=0):
    """Real benchmark text (verbatim, embedded, re-cased and re-punctuated, 13-word spans, paraphrased)
    among real web text from the DCLM sample."""
    rng = random.Random(seed)
    texts = [t for b in BUILTIN for t in load_benchmark(b, BENCH)["text"]]
    with open(os.path.join(SHARED_DATA, "corpus", "dclm_cc_pages.jsonl")) as f:
        web = [json.loads(line)["text"] for line in f]
    items = []
    for i in range(1200):
        t, w = rng.choice(texts), rng.choice(web)
        words, start = w.split(), rng.randrange(max(1, len(w.split()) - 60))
        kind = i % 8
        if kind == 0:
            s = t
        elif kind == 1:
            s = " ".join(words[start:start + 20]) + " " + t + " " + " ".join(words[start + 20:start + 30])
        elif kind == 2:
            s = t.upper().replace(",", " , ").replace(".", "!")
        elif kind == 3:
            tw = t.split()
            k = rng.randrange(max(1, len(tw) - 13))
            s = "So: " + " ".join(tw[k:k + 13]) + " ... what now?"
        elif kind == 4:
            s = paraphrase(t)
        else:
            s = " ".join(words[start:start + rng.randint(5, 60)])
        items.append((f"i{i}", s))
    return texts, items


@needs_benchmarks
@pytest.mark.parametrize("tokenize", ["split_first", "normalize_first"])
def test_flags_equal_lm_evals(spark, bench, tokenize):
    """split_first == Janitor.clean (python mode); normalize_first == lm-eval's
    word_ngrams(normalize_string(.)) lookup; plus, in both, short items equal to a short benchmark text."""
    jan = load_lm_eval_janitor()

    class Flagging(jan.Janitor):
        def _split_chunks(self, dirty_string, dirty_parts):  # the contaminated windows clean() found
            return next(iter(dirty_parts), None) is not None

    j = Flagging(ngram_n=13)
    texts, items = mixed_items()
    short = set()
    for t in texts:
        j.register_contaminant_python(t)
        if len(j.normalize_string(t).split()) < 13:
            short.add(tuple(j.normalize_string(t).split()))

    def lm_eval_flag(s):
        if tokenize == "split_first":
            return j.clean_python(s)
        return any(g in j.dirt_ngrams for g in jan.word_ngrams(j.normalize_string(s), 13))

    expected = {i for i, s in items
                if lm_eval_flag(s) or tuple(j.normalize_string(s).split()) in short - {()}}
    df = spark.createDataFrame(items, "id string, q string")
    ours = {r.item_id for r in find_contamination(df, "id", ["q"], bench, tokenize=tokenize).collect()}
    assert ours == expected
    assert 300 < len(expected) < 1000  # a mixed set: plenty flagged, plenty clean


def test_benchmarks_yaml_and_local_yaml():
    from jobs.common.config import REPO_ROOT
    from jobs.tools.decontaminate import cli_config

    written = cli_config(str(REPO_ROOT / "conf" / "benchmarks.yaml"), 13, None)
    assert [b.model_dump() for b in resolve(written.benchmarks)] == [b.model_dump() for b in BUILTIN]
    local = load_config(REPO_ROOT / "conf" / "local.yaml").decontaminate
    assert local.index == "builtin" and local.benchmarks is None and "shared" not in local.benchmarks_dir


# --------------------------------------------------------------------------- the shipped index


def test_shipped_index_holds_hashes_only():
    import pyarrow.parquet as pq

    from jobs.common import benchmark_index as bi
    from jobs.tools import benchmarks as benchmarks_cli

    idx = bi.read(bi.BUILTIN_INDEX)
    assert idx.n == 13 and idx.manifest["normalization_version"] == bi.NORMALIZATION_VERSION
    info = idx.manifest["benchmarks"]
    assert list(info) == ["math", "gpqa", "mmlu_pro", "mmlu_stem"]
    assert {b: v["items"] for b, v in info.items()} == {"math": 5000, "gpqa": 198, "mmlu_pro": 12030,
                                                        "mmlu_stem": 3153}
    assert all(v["sources"] and all(len(s["sha256"]) == 64 for s in v["sources"]) for v in info.values())
    assert len(info["mmlu_stem"]["sources"]) == 19
    # No text: the n-gram file is (int64 hash, int32 item); the item file is ids and counts.
    assert pq.read_schema(f"{bi.BUILTIN_INDEX}/ngrams.parquet").names == ["ngram_hash", "item"]
    assert pq.read_schema(f"{bi.BUILTIN_INDEX}/items.parquet").names == ["item", "benchmark", "benchmark_item_id",
                                                                         "short_texts"]
    h = idx.ngrams["ngram_hash"].to_numpy()
    assert (h[1:] >= h[:-1]).all(), "sorted by hash"
    assert len(idx.ngrams) == sum(v["rows"] for v in info.values())
    assert idx.ngrams.groupby("item").size().index.isin(idx.items["item"]).all()
    assert sum(os.path.getsize(f"{bi.BUILTIN_INDEX}/{f}") for f in os.listdir(bi.BUILTIN_INDEX)) < 10 << 20


def test_an_index_of_another_normalization_is_refused(tmp_path):
    from jobs.common import benchmark_index as bi
    from jobs.tools import benchmarks as benchmarks_cli

    idx = bi.build(house_definitions(tmp_path), str(tmp_path))
    bi.write(idx, str(tmp_path / "idx"))
    assert bi.read(str(tmp_path / "idx")).pairs() == idx.pairs()
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(manifest | {"normalization_version": 0}))
    with pytest.raises(ValueError, match="rebuild it"):
        bi.read(str(tmp_path / "idx"))
    with pytest.raises(BenchmarkMissing, match="build-index"):
        bi.read(str(tmp_path / "nowhere"))


def test_custom_index_folder_and_other_ngram_size(spark, tmp_path):
    """An index built by the command serves the stage by name; a run with another n-gram size
    does not use a 13-gram index but reads the definitions' files."""
    from jobs.common import benchmark_index as bi
    from jobs.tools import benchmarks as benchmarks_cli

    (tmp_path / "b.yaml").write_text(yaml_of(house_definitions(tmp_path)))
    assert benchmarks_cli.cli_main(["build-index", "--benchmarks-config", str(tmp_path / "b.yaml"), "--benchmarks-dir",
                        str(tmp_path), "--output", str(tmp_path / "idx")]) == 0
    cfg = load_config(None, [f"decontaminate.index={tmp_path / 'idx'}", "decontaminate.benchmarks=[house_b]"])
    idx = build_benchmark_index(spark, cfg.decontaminate.benchmarks, "", 13, str(tmp_path / "idx"))
    assert idx.checked == ["house_b"]
    with pytest.raises(ValueError, match="neither in the index"):
        build_benchmark_index(spark, ["house_c"], "", 13, str(tmp_path / "idx"))
    with pytest.raises(BenchmarkMissing):  # 5-grams: math from its files, and there are none here
        build_benchmark_index(spark, ["math"], "", 5, "builtin")


def yaml_of(defs) -> str:
    import yaml

    return yaml.safe_dump({"benchmarks": [d.model_dump(exclude_none=True) for d in defs]})


def test_build_index_from_hugging_face_definitions(tmp_path, monkeypatch):
    """format hf, with one configuration per subject, through a stand-in `datasets` module."""
    import sys
    import types

    import pandas as pd

    from jobs.common import benchmark_index as bi
    from jobs.tools import benchmarks as benchmarks_cli

    calls = []

    def load_dataset(path, config, split):
        calls.append((path, config, split))
        rows = {"alpha": ["first toy problem about alpha", "second toy problem"], "beta": ["a beta problem"]}[config]
        return types.SimpleNamespace(to_pandas=lambda: pd.DataFrame({"problem": rows}))

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    b = BenchmarkConfig(name="toy", format="hf", path="org/toy", hf_config="{subject}", split="test",
                        text_fields=["problem"], subset_values=["alpha", "beta"])
    idx = bi.build([b], "")
    assert calls == [("org/toy", "alpha", "test"), ("org/toy", "beta", "test")]
    assert sorted(idx.items["benchmark_item_id"]) == ["alpha/0", "alpha/1", "beta/0"]
    src = idx.manifest["benchmarks"]["toy"]["sources"]
    assert [(s["dataset"], s["config"]) for s in src] == [("org/toy", "alpha"), ("org/toy", "beta")]


@needs_benchmarks
def test_rebuilt_index_equals_the_shipped_one(tmp_path):
    import pyarrow.parquet as pq

    from jobs.common import benchmark_index as bi
    from jobs.tools import benchmarks as benchmarks_cli

    assert benchmarks_cli.cli_main(["build-index", "--benchmarks-dir", BENCH, "--output", str(tmp_path / "idx")]) == 0
    shipped, rebuilt = bi.read(bi.BUILTIN_INDEX), bi.read(str(tmp_path / "idx"))
    for name in shipped.names:
        assert rebuilt.pairs(name) == shipped.pairs(name), name
    assert rebuilt.manifest == shipped.manifest
    # The same rows in the same order with the same schema; the file's bytes also carry the
    # writing pyarrow's version ("created_by"), which differs between environments (Spark 3.5's).
    rebuilt_t = pq.read_table(tmp_path / "idx" / "ngrams.parquet")
    shipped_t = pq.read_table(f"{bi.BUILTIN_INDEX}/ngrams.parquet")
    assert rebuilt_t.equals(shipped_t)  # not the schema metadata: pandas records its own and pyarrow's versions


def parity_candidates(seed=1):
    """Every benchmark text, perturbed copies (case and punctuation, 13-token spans, light
    paraphrases) of a sample of them, and clean text from the bundled sample corpus."""
    from jobs.common.config import REPO_ROOT

    rng = random.Random(seed)
    texts = [t for b in BUILTIN for t in load_benchmark(b, BENCH)["text"]]
    items = [(f"t{i}", t) for i, t in enumerate(texts)]
    for i, t in enumerate(rng.sample(texts, 1500)):
        words = t.split()
        k = rng.randrange(max(1, len(words) - 13))
        items += [(f"c{i}", t.upper().replace(",", " ; ").replace("?", "!!")),
                  (f"s{i}", "Quick one: " + " ".join(words[k:k + 13]) + " -- any ideas?"),
                  (f"p{i}", paraphrase(t))]
    for name in ("dclm_baseline.jsonl", "finemath.jsonl"):
        with open(REPO_ROOT / "data" / "sample" / name) as f:
            items += [(f"w{name[:2]}{i}", json.loads(line)["text"][:3000]) for i, line in enumerate(f)]
    return items


@needs_benchmarks
@pytest.mark.parametrize("tokenize", ["normalize_first", "split_first"])
def test_index_and_raw_files_flag_the_same_items(spark, bench, raw_bench, tokenize):
    items = parity_candidates()
    df = spark.createDataFrame(items, "id string, q string").repartition(4)

    def flags(idx):
        return {(r.item_id, r.benchmark, r.benchmark_item_id, r.match_count, r.matched_ngram)
                for r in find_contamination(df, "id", ["q"], idx, tokenize=tokenize).collect()
                if r.benchmark in raw_bench.checked}

    from_index, from_raw = flags(bench), flags(raw_bench)
    assert from_index == from_raw
    flagged = {f[0] for f in from_index}
    by_kind = {k: sum(i.startswith(k) for i in flagged) for k in "tcspw"}
    n_texts = sum(i.startswith("t") for i, _ in items)
    if tokenize == "normalize_first":  # a benchmark text always shares its own grams
        assert by_kind["t"] == n_texts and by_kind["c"] > 1400  # .upper() also changes non-ASCII letters
    assert by_kind["t"] > n_texts // 2 and by_kind["s"] > 900 and by_kind["w"] < 10, by_kind

"""`nr decontaminate` on small inputs runs in its own process: the same rows as the Spark path."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.tools.decontaminate import cli_main
from jobs.common.contamination import (BenchmarkIndex, _assemble, build_benchmark_index, find_contamination,
                                find_contamination_in_process)
from tests.test_decontaminate import house_definitions, long_gpqa_question, long_math_question, paraphrase
from udfs import ngrams


def _items():
    _, mq = long_math_question()
    _, gq = long_gpqa_question()
    words = gq.split()
    return [
        ("101", mq, None), ("202", "Here is an exercise. " + mq + " Thanks!", "nothing"),
        ("303", mq.upper().replace(",", " ,").replace("$", ""), ""), ("404", "Consider: " + " ".join(words[5:18]), None),
        ("505", paraphrase(gq), " ".join(words[:13])), ("606", " , ".join(mq.split()), " ".join(words[:14])),
        ("707", "", None), ("808", None, None), ("909", "a short one", "x = y"), ("x10", "What is 2+2?", None),
    ]


def _rows(rows):
    return sorted(tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in rows)


@pytest.mark.parametrize("tokenize", ngrams.TOKENIZATIONS)
@pytest.mark.parametrize("cols,min_matches", [(["q"], 1), (["q", "ctx"], 1), (["q", "ctx"], 2)])
def test_in_process_equals_spark(spark, tmp_path, tokenize, cols, min_matches):
    defs = ["math", "gpqa", *house_definitions(tmp_path)]
    items = _items()
    df = spark.createDataFrame(items, "id string, q string, ctx string")
    bench = build_benchmark_index(spark, defs, str(tmp_path), 13, index="builtin")
    want = find_contamination(df, "id", cols, bench, 13, min_matches, tokenize).collect()
    tables, fields = _assemble(defs, str(tmp_path), 13, "builtin")
    table = pa.table({"id": [r[0] for r in items], "q": [r[1] for r in items], "ctx": [r[2] for r in items]})
    got = find_contamination_in_process(table, "id", cols, BenchmarkIndex(None, None, **fields), tables.items, 13,
                                        min_matches, tokenize)
    assert got.column_names == ["item_id", "benchmark", "benchmark_item_id", "matched_ngram", "match_count"]
    assert _rows(got.to_pylist()) == _rows(want)
    assert len(want) >= (2 if min_matches == 2 else 4)


def test_cli_in_process_and_spark_write_the_same(spark, tmp_path, capsys):
    house_definitions(tmp_path)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"key": i, "text": t}) + "\n" for i, (_, t, _) in enumerate(_items())))
    conf = tmp_path / "b.yaml"
    conf.write_text(f"benchmarks_dir: {tmp_path}\nbenchmarks: [math, {{name: house_a, format: jsonl, "
                    f"path: '{{benchmarks_dir}}/house_a.jsonl', text_fields: [q], id_field: id}}]\n")
    common = ["--input", str(src), "--input-format", "jsonl", "--id-col", "key", "--text-col", "text",
              "--benchmarks-config", str(conf)]
    assert cli_main([*common, "--output", str(tmp_path / "auto")]) == 0
    assert "(in process)" in capsys.readouterr().out
    assert cli_main([*common, "--output", str(tmp_path / "spark"), "--engine", "spark"]) == 0
    assert "(Spark)" in capsys.readouterr().out
    auto = _rows(pq.read_table(tmp_path / "auto" / "contamination").to_pylist())
    assert auto == _rows(pq.read_table(tmp_path / "spark" / "contamination").to_pylist()) and len(auto) >= 3
    # what the in-process path cannot cast as Spark does goes to Spark, or is an error when asked for
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"key": 1.5, "text": "x"}) + "\n")
    assert cli_main(["--input", str(bad), *common[2:], "--output", str(tmp_path / "o"), "--engine", "in-process"]) == 2
    assert "in-process" in capsys.readouterr().err

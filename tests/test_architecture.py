"""The floors of ARCHITECTURE.md §2 that code can check: no import cycles (top-level and
function-level imports alike), ``udfs`` never imports ``jobs``, the stage specs are the one
source of the stage facts, and the README's stage table is theirs."""
from __future__ import annotations

import ast
import os
import re
from types import SimpleNamespace

from jobs import cli
from jobs.common import chunks
from jobs.common.config import PipelineConfig
from jobs.common.runs import out_of_date_reasons
from jobs.stages import BY_NAME, DEFAULT_STAGES, NAMES, OPT_IN, STAGES, producer_of, stage_table
from tests.conftest import REPO

PACKAGES = ("jobs", "udfs", "prompts", "benchmarks")


def _modules() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        for folder, _, files in os.walk(os.path.join(REPO, pkg)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, f), REPO)[:-3].replace(os.sep, ".")
                    out[rel.removesuffix(".__init__")] = os.path.join(folder, f)
    return out


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines under ``if TYPE_CHECKING:``: annotations only, never executed."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, at the top or inside a function."""
    mods = _modules()

    def resolve(name: str):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in mods.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        skip = _type_checking_lines(tree)
        deps = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            deps.update(r for n in names if (r := resolve(n)) and r != mod)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_even_through_function_level_imports():
    found = cycles(import_graph())
    assert not found, f"import cycles: {found}"


def test_udfs_never_import_jobs():
    bad = {m: sorted(d for d in deps if d.startswith("jobs")) for m, deps in import_graph().items()
           if m.startswith("udfs") and any(d.startswith("jobs") for d in deps)}
    assert not bad, f"executor-side modules importing the driver side: {bad}"


def test_no_code_cites_a_document_outside_the_repository():
    cited = []
    for mod, path in _modules().items():
        with open(path) as f:
            if re.search(r"DESIGN §", f.read()):
                cited.append(mod)
    assert not cited, f"cite ARCHITECTURE.md instead: {cited}"


# --------------------------------------------------------------------------- the stage specs


def test_stage_names_are_unique_and_ordered_by_phase():
    assert len(set(NAMES)) == len(NAMES) == 17
    phases = [s.phase for s in STAGES]
    assert phases == sorted(phases, key=["corpus", "questions", "answers", "selftrain", "selection"].index)
    assert set(OPT_IN) <= set(NAMES) and set(DEFAULT_STAGES) == set(NAMES) - set(OPT_IN)


def test_every_spec_fact_points_at_something_real():
    fields = PipelineConfig.model_fields
    written = {t for s in STAGES for t in s.output_tables}
    for s in STAGES:
        assert all(sec in fields for sec in s.sections if sec), (s.name, s.sections)
        assert s.run is not None and s.summary
        # every input is written by a stage of the pipeline (ingest's sources are configured, not specs)
        assert set(s.inputs) <= written, (s.name, set(s.inputs) - written)
        for o in s.outputs:
            assert o.key, f"{s.name}: output {o.table} has no key"
        if s.kind == "llm":
            assert s.work is not None and s.roles is not None, s.name
    assert producer_of("questions") == "synthesize" and producer_of("no_such_table") is None


def test_the_defects_the_specs_remove():
    # sample is configured under self_sample (not under sample, the bootstrap corpus)
    assert BY_NAME["sample"].section == "self_sample" and BY_NAME["bootstrap"].section == "sample"
    # every stage that reads usable questions lists the semdedup table among its inputs
    for name in ("embed", "respond", "judge", "dataset", "sample", "select_traces", "select_targeted"):
        assert "semdedup_questions_clusters" in BY_NAME[name].inputs, name


def test_a_self_sample_change_changes_the_sample_stage_hash():
    cfg = PipelineConfig()
    changed = cfg.model_copy(update={"self_sample": cfg.self_sample.model_copy(update={"max_tokens": 99})})
    sample = BY_NAME["sample"]
    assert sample.config_hash(cfg) != sample.config_hash(changed)
    assert BY_NAME["bootstrap"].config_hash(cfg) == BY_NAME["bootstrap"].config_hash(changed)


def test_readme_stage_table_is_the_specs():
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    m = re.search(r"<!-- stages:begin -->\n(.*?)\n?<!-- stages:end -->", text, re.S)
    assert m, "README.md lost its stage table markers"
    assert m.group(1).strip() == stage_table().strip(), "README stage table is stale: paste `nr stages --markdown`"


def test_nr_stages_lists_the_registry(capsys):
    assert cli.main(["stages"]) == 0
    assert capsys.readouterr().out.split() == list(NAMES)
    assert cli.main(["stages", "--markdown"]) == 0
    assert capsys.readouterr().out.strip() == stage_table().strip()


def test_a_semdedup_change_puts_dataset_out_of_date():
    cfg = PipelineConfig()
    dataset = BY_NAME["dataset"]
    last_ok = {"stage_config_hash": dataset.config_hash(cfg), "input_versions": {"questions": 2, "documents": 1}}
    assert out_of_date_reasons(dataset, cfg, last_ok, {"questions": 2, "documents": 1}) == []
    assert out_of_date_reasons(dataset, cfg, last_ok, {"questions": 2, "documents": 1,
                                                       "semdedup_questions_clusters": 0}) == [
        "input semdedup_questions_clusters appeared (v0)"]


def test_a_changed_sampling_config_changes_the_chunk_fingerprint():
    cfg = PipelineConfig()
    changed = cfg.model_copy(update={"self_sample": cfg.self_sample.model_copy(update={"max_tokens": 99})})
    pending = SimpleNamespace(schema=SimpleNamespace(json=lambda: "{}"))

    def fp(c):
        ctx = SimpleNamespace(stage="sample", spec=BY_NAME["sample"], cfg=c, input_versions={"questions": 3}, counts={})
        return chunks.fingerprint(ctx, "samples-1", pending, ["question_id"], "samples", ["question_id"], 256)

    assert fp(cfg) == fp(cfg) and fp(cfg) != fp(changed)

"""A deterministic stand-in model for the pipeline's prompts (tests and dry runs only).

``respond`` recognises each pipeline prompt by a phrase it contains and answers the way a
model would, from the content it was given, so that every stage, every parser path and the
near-duplicate and contamination stages see realistic, reproducible data:

* annotate: scores from how much worked reasoning the document shows; about one output in
  seventeen is cut off mid-JSON (a ``length`` finish) to exercise the parse-failure path.
* synthesize: a question built from the document's opening words (so near-duplicate pages
  give near-duplicate questions, and a page quoting a benchmark gives a contaminated
  question); every eleventh document gets prose instead of JSON.
* respond / judges: answers, scores and Yes/No first-token logprobs derived from a hash.
* sample (self-training): worked answers ending in a boxed value drawn from a few values
  written in equivalent forms (1/2 as ``\\frac{1}{2}`` or ``0.5``), or in an "answer is"
  phrase, or with no final answer; greedy (temperature 0) samples do not depend on the index.
* trace strategy tags: from cue words in the reasoning, plus one chosen by hash.

Use with ``engine: scripted`` and ``engine_kwargs: {script: "udfs.llm.scripted_pipeline:respond"}``.
"""
from __future__ import annotations

import hashlib
import json
import re

_MARKERS = re.compile(
    r"\b(therefore|because|thus|hence|so that|which means|implies|we get|it follows|substitut\w*|solv\w*|"
    r"step|since|consider|suppose|assume|compute|derive|prove)\b|=",
    re.I,
)
_QUOTED = re.compile(r'"""\n?(.*?)\n?"""', re.S)


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)


def _quoted(prompt: str, index: int = 0) -> str:
    blocks = _QUOTED.findall(prompt)
    return blocks[index].strip() if len(blocks) > index else ""


def annotate(doc: str) -> dict:
    words = doc.split()
    n = len(words)
    markers = len(_MARKERS.findall(doc))
    h = _h(doc)
    scores = {
        "completeness": 4 if n >= 120 and markers >= 3 else (2 if n >= 60 else 0),
        "complexity": 4 if n >= 100 and markers >= 4 else (2 if markers >= 2 else 0),
        "correctness": 4 if n >= 60 else 1,
        "reasoning": 4 if markers >= 5 else max(0, markers - 1),
        "domain": (words[0].strip(".,:;!?").lower() if words else "none")[:20],
    }
    text = json.dumps(scores)
    if h % 17 == 0:
        return {"text": text[: len(text) // 2], "finish_reason": "length"}
    return {"text": text}


def synthesize(doc: str) -> dict:
    h = _h(doc)
    if h % 11 == 0:
        return {"text": "This page does not contain a problem I can turn into a question."}
    words = doc.split()
    opening = " ".join(words[:40])
    question = f"Consider the following situation: {opening} Working step by step, what conclusion follows, and why?"
    reference = " ".join(words[-5:]) if h % 3 else None
    return {"text": json.dumps({"question": question, "reference_answer": reference})}


def answer(question: str, sample_idx: int) -> dict:
    h = _h(f"{question}|{sample_idx}")
    return {"text": f"Step 1: restate the problem. Step 2: apply the relevant principle. Final answer: option {h % 7}."}


SAMPLE_FORMS = [r"\boxed{\frac{1}{2}}", r"\boxed{0.5}", r"\boxed{2}", "The answer is 2.", r"\boxed{\sqrt{9}}",
                "I could not finish the computation."]


def sample_answer(question: str, temperature: float, sample_idx: int) -> dict:
    """A self-training sample: greedy decoding gives one text per question, sampling varies it."""
    h = _h(f"{question}|{temperature}|{0 if temperature == 0 else sample_idx}")
    # The question's own hash biases it toward one value, so most questions have a clear majority.
    pick = _h(question) % len(SAMPLE_FORMS) if h % 3 else h % len(SAMPLE_FORMS)
    return {"text": f"Step 1: read the problem. Step 2: compute carefully ({h % 97}). {SAMPLE_FORMS[pick]}"}
_STRATEGY_CUES = (("restate", "Restating the problem"), ("principle", "Applying a known principle"),
                  ("step", "Step by step"), ("check", "Checking the result"), ("suppose", "Proof by contradiction"),
                  ("case", "Case analysis"), ("substitut", "Substitution"))
_EXTRA_STRATEGIES = ("Working backwards", "Estimation", "Unit analysis", "Analogy", "Drawing a diagram")


def strategies(reasoning: str) -> dict:
    """Tags from cue words in the reasoning plus one picked by hash, so traces differ."""
    low = reasoning.lower()
    tags = [tag for cue, tag in _STRATEGY_CUES if cue in low]
    tags.append(_EXTRA_STRATEGIES[_h(reasoning) % len(_EXTRA_STRATEGIES)])
    return {"text": json.dumps({"strategies": tags})}


def respond(messages: list[dict], sampling=None, sample_idx: int = 0):
    prompt = messages[-1]["content"] if messages else ""
    if "Rate the document below on four axes" in prompt:
        return annotate(_quoted(prompt))
    if "Compose one new, self-contained question" in prompt:
        return synthesize(_quoted(prompt))
    if "Rate how well the question meets every criterion" in prompt:
        q = _quoted(prompt)
        return {"text": json.dumps({"question_quality_score": 1 + _h(q) % 10, "improved_question": q})}
    if "Compare the response with the reference answer" in prompt:
        verdict = "Yes" if _h(prompt) % 2 else "No"
        return {"text": json.dumps({"verdict": verdict, "explanation": "Scripted comparison."})}
    if "Is the response good?" in prompt and "I could not finish" in prompt:
        # Neither Yes nor No among the top tokens: the self-score's no_verdict path.
        return {"text": "Unsure", "first_token_logprobs": {"Unsure": -0.2, "Maybe": -1.9}}
    if "Name the reasoning strategies" in prompt:
        return strategies(_quoted(prompt, 1))
    if "Is the response good?" in prompt:
        yes = _h(prompt) % 3 != 0
        lp = {"Yes": -0.1, "No": -2.4} if yes else {"Yes": -1.9, "No": -0.2}
        return {"text": "Yes" if yes else "No", "first_token_logprobs": lp}
    if "written inside \\boxed{}" in prompt:
        return sample_answer(prompt, float(getattr(sampling, "temperature", 0.0) or 0.0), sample_idx)
    return answer(prompt, sample_idx)

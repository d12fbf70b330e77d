"""Does a generation only repeat its prompt's instructions?

A small model sometimes answers a prompt with the prompt: a "question" such as "What is the
answer to the question", or a response that is the instruction "work through the problem one
step at a time ... inside \\boxed{}" again. Such rows parse, so nothing else stops them
reaching the dataset and the DPO export. ``prompt_overlap`` is the share of a text's distinct
word bigrams that occur in the prompt template's own words (its placeholders left out, so a
response that quotes the question it was asked does not count); at ``ECHO_THRESHOLD`` or more
the row gets the status ``echoes_prompt``. A real question or answer shares a few common
bigrams with any instruction ("of the", "the answer"), far below the threshold.
"""
from __future__ import annotations

import re
import string
from functools import lru_cache
from typing import Optional

from udfs.llm.prompts import load_prompt

ECHO_THRESHOLD = 0.6
# Texts with fewer distinct bigrams are too short to judge ("42", "The answer is 7").
MIN_BIGRAMS = 3
_WORD = re.compile(r"[^\W_]+")


def bigrams(text: Optional[str]) -> set[tuple[str, str]]:
    """Distinct lower-cased word bigrams (punctuation and markup split words).

    >>> sorted(bigrams("Reason step by step!"))
    [('by', 'step'), ('reason', 'step'), ('step', 'by')]
    """
    words = _WORD.findall((text or "").lower())
    return set(zip(words, words[1:]))


@lru_cache(maxsize=None)
def instruction_bigrams(prompt_name: str) -> frozenset:
    """The bigrams of a prompt template's fixed text: section headers and ``${field}``
    placeholders removed (a placeholder also breaks the bigram across it)."""
    prompt = load_prompt(prompt_name)
    text = "\n".join(body for _, body in prompt.sections)
    text = string.Template.pattern.sub(" | ", text)
    grams: set = set()
    for piece in text.split(" | "):
        grams |= bigrams(piece)
    return frozenset(grams)


def prompt_overlap(text: Optional[str], grams: frozenset) -> Optional[float]:
    """Share of ``text``'s distinct bigrams found in ``grams``; None for a text too short to judge.

    >>> g = frozenset(bigrams("Work through the problem one step at a time"))
    >>> prompt_overlap("Work through the problem one step at a time.", g)
    1.0
    >>> prompt_overlap("The integral of x squared from 0 to 3 is 9.", g)
    0.0
    >>> prompt_overlap("42", g) is None
    True
    """
    own = bigrams(text)
    if len(own) < MIN_BIGRAMS:
        return None
    return len(own & grams) / len(own)

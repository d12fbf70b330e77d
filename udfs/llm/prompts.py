"""Prompt templates: ``prompts/<name>.txt``, loaded by name.

Format: optional section headers ``=== system ===`` / ``=== user ===`` / ``=== assistant ===``
(a file without headers is one user message); placeholders ``${field}`` in
``string.Template`` syntax (``$$`` is a literal dollar).
"""
from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

_HEADER = re.compile(r"^===\s*(system|user|assistant)\s*===\s*$", re.M)


def prompts_dir() -> Path:
    import prompts

    return Path(prompts.__file__).resolve().parent


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:12]

    @property
    def sections(self) -> list[tuple[str, str]]:
        parts = _HEADER.split(self.text)
        if len(parts) == 1:
            return [("user", self.text.strip())]
        return [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts), 2)]

    @property
    def fields(self) -> set[str]:
        out = set()
        for m in string.Template.pattern.finditer(self.text):
            name = m.group("named") or m.group("braced")
            if name:
                out.add(name)
        return out

    def render(self, row: Mapping) -> list[dict]:
        values = {k: ("" if row.get(k) is None else str(row.get(k))) for k in self.fields}
        return [{"role": role, "content": string.Template(body).substitute(values)} for role, body in self.sections]


@lru_cache(maxsize=None)
def load_prompt(name: str) -> Prompt:
    path = prompts_dir() / f"{name}.txt"
    if not path.exists():
        known = sorted(p.stem for p in prompts_dir().glob("*.txt"))
        raise FileNotFoundError(f"prompt {name!r} not found in {prompts_dir()}; known prompts: {known}")
    return Prompt(name, path.read_text(encoding="utf-8"))

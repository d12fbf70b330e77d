"""The transformers engine: a local HF folder or a ``.gguf`` file, CPU or GPU.

The fallback where vLLM does not install (macOS, some ARM machines). Batched generation with
left padding, the tokenizer's chat template, greedy at temperature 0 and seeded sampling
otherwise, first-token top-k logprobs from the real logits, and the same too-long rule as
the vLLM engine (``udfs.llm.truncate``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from udfs.llm.base import Completion, Conversation, Sampling
from udfs.llm.truncate import fit_messages


class TransformersEngine:
    def __init__(self, model_cfg: dict):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from udfs.llm.models import resolve_model

        self.name = model_cfg.get("label") or model_cfg["model"]
        self.max_model_len = int(model_cfg.get("max_model_len") or 2048)
        self.too_long = model_cfg.get("too_long", "truncate")
        torch.set_num_threads(int(model_cfg.get("torch_threads") or os.cpu_count() or 1))
        path = Path(resolve_model(model_cfg["model"], "transformers", model_cfg.get("cache_dir"),
                                  model_cfg.get("storage_options")))
        kw = {"gguf_file": path.name} if path.suffix == ".gguf" else {}
        where = str(path.parent) if kw else str(path)
        self.tokenizer = AutoTokenizer.from_pretrained(where, **kw)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(where, **kw).to(self.device).eval()
        self.torch = torch

    def _ids(self, messages: list[dict]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def count_tokens(self, messages: list[dict]) -> int:
        return len(self._ids(messages))

    def _generate(self, prompts: list[list[int]], s: Sampling, sample_idx: int) -> list[Completion]:
        torch = self.torch
        batch = self.tokenizer.pad({"input_ids": prompts}, return_tensors="pt").to(self.device)
        gen_kw = dict(max_new_tokens=s.max_tokens, pad_token_id=self.tokenizer.pad_token_id,
                      return_dict_in_generate=True, output_scores=bool(s.logprobs))
        if s.temperature > 0:
            torch.manual_seed((s.seed or 0) + sample_idx)
            gen_kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
        else:
            gen_kw.update(do_sample=False)
        with torch.no_grad():
            out = self.model.generate(**batch, **gen_kw)
        width = batch["input_ids"].shape[1]
        eos = self.tokenizer.eos_token_id
        results = []
        for row, prompt in enumerate(prompts):
            new = out.sequences[row, width:].tolist()
            stopped = eos in new
            if stopped:
                new = new[: new.index(eos)]
            new = [t for t in new if t != self.tokenizer.pad_token_id]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            if s.stop:
                cut = min((text.find(x) for x in s.stop if x in text), default=-1)
                if cut >= 0:
                    text, stopped = text[:cut], True
            lps = None
            if s.logprobs:
                logp = torch.log_softmax(out.scores[0][row].float(), dim=-1)
                top = torch.topk(logp, s.logprobs)
                lps = {}
                for v, i in zip(top.values.tolist(), top.indices.tolist()):
                    tok = self.tokenizer.decode([i])
                    lps[tok] = max(lps.get(tok, float("-inf")), v)
            results.append(Completion(text=text, prompt_tokens=len(prompt), completion_tokens=len(new),
                                      finish_reason="stop" if stopped else "length", first_token_logprobs=lps))
        return results

    def chat(self, conversations: Sequence[Conversation], sampling: Sequence[Sampling]) -> list[list[Completion]]:
        results: list = [None] * len(conversations)
        groups: dict[Sampling, list[tuple[int, list[int], bool]]] = {}
        for i, (conv, s) in enumerate(zip(conversations, sampling)):
            fitted, truncated, too_long = fit_messages(list(conv), self.count_tokens, self.max_model_len - s.max_tokens,
                                                       self.too_long)
            if too_long:
                results[i] = [Completion("", self.count_tokens(list(conv)), 0, "too_long") for _ in range(s.n)]
                continue
            groups.setdefault(s, []).append((i, self._ids(fitted), truncated))
        for s, items in groups.items():  # rows with the same sampling share one batched generate()
            per_row = {i: [] for i, _, _ in items}
            for idx in range(s.n):
                for c, (i, _, truncated) in zip(self._generate([p for _, p, _ in items], s, idx), items):
                    c.truncated_prompt = truncated
                    per_row[i].append(c)
            for i, cs in per_row.items():
                results[i] = cs
        return results

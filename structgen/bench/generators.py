"""Text generators compared by `bench coverage` and `bench serve --baseline hf`: structgen's engine, and
transformers `generate` unconstrained or masked by a peer through a logits processor written here.

All of them take the same prompt token ids and decode greedily; constraint compile time is kept apart from
generation time so "time per output token" means the same thing for each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .peers import EngineUnavailable, create_engine, mask_words


@dataclass
class Generation:
    text: str
    output_tokens: int
    forced_tokens: int          # tokens with no choice: skipped by structgen's forced runs / a one-token mask for peers
    gen_s: float                # generation wall time (prefill + decode), compile excluded
    finish_reason: str          # "stop" | "length" | "error"
    ttft_s: float | None = None
    error: str | None = None


class ConstraintRefused(Exception):
    """The engine does not compile this schema (counts against its declared coverage)."""


# --- transformers + a mask engine ---------------------------------------------------------------------------

def allowed_from_row(row: np.ndarray, vocab_size: int) -> np.ndarray:
    """(ceil(V/32),) int32 bitmask row -> (V,) bool, bit i%32 of word i//32 = token i (LSB first)."""
    return np.unpackbits(row.view(np.uint8), bitorder="little")[:vocab_size].astype(bool)


class MaskLogitsProcessor:
    """A transformers logits processor that masks with any bench mask engine (peers.py adapters).

    Call order (transformers): once per step with the sequence so far; the first call sees only the prompt, each
    later call first feeds the previous step's token to the matcher. Batch size 1 only.
    """

    def __init__(self, compiled, vocab_size: int):
        import torch

        self._torch = torch
        self._matcher = compiled.matcher()
        self._vocab_size = vocab_size
        self._row = np.zeros(mask_words(vocab_size), dtype=np.int32)
        self._prompt_len: int | None = None
        self.forced_steps = 0
        self.steps = 0
        self.mask_s = 0.0
        self.failed: str | None = None

    def __call__(self, input_ids, scores):
        torch = self._torch
        if input_ids.shape[0] != 1:
            raise ValueError("MaskLogitsProcessor handles one sequence at a time")
        if self._prompt_len is None:
            self._prompt_len = input_ids.shape[1]
        elif not self._matcher.advance(int(input_ids[0, -1])):
            self.failed = f"matcher refused token {int(input_ids[0, -1])} it had allowed"
        t0 = time.perf_counter()
        self._row.fill(0)
        self._matcher.fill_mask(self._row)
        allowed = allowed_from_row(self._row, self._vocab_size)  # (V,) bool
        self.mask_s += time.perf_counter() - t0
        self.steps += 1
        n_allowed = int(allowed.sum())
        if n_allowed == 1:
            self.forced_steps += 1
        block = torch.ones(scores.shape[-1], dtype=torch.bool)  # (V_model,) True = masked out
        block[: self._vocab_size] = torch.from_numpy(~allowed)
        return scores.masked_fill(block.unsqueeze(0), float("-inf"))  # (1, V_model) float


class HFGenerator:
    """transformers `generate` (greedy) on the default model; `peer` = None for the unconstrained LM."""

    def __init__(self, tokenizer, peer: str | None = None, model=None, model_dir=None):
        import torch
        from transformers import AutoModelForCausalLM

        self.name = "hf" if peer is None else f"hf+{peer}"
        self._torch = torch
        self._tokenizer = tokenizer
        if model is None:
            if model_dir is None:
                from structgen.assets import prepare_default_model

                model_dir = prepare_default_model()
            model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
            model.eval()
        self.model = model
        self._peer = create_engine(peer, tokenizer) if peer else None  # raises EngineUnavailable

    def compile(self, schema):
        if self._peer is None:
            return None
        try:
            return self._peer.compile(schema)
        except Exception as e:
            raise ConstraintRefused(f"{type(e).__name__}: {e}"[:300]) from e

    def generate(self, prompt_ids: list[int], compiled, max_tokens: int) -> Generation:
        torch = self._torch
        eos = sorted(self._tokenizer.eos_token_ids)
        processors = []
        proc = None
        if compiled is not None:
            from transformers import LogitsProcessorList

            proc = MaskLogitsProcessor(compiled, self._tokenizer.vocab_size)
            processors = LogitsProcessorList([proc])
        input_ids = torch.tensor([prompt_ids], dtype=torch.long)  # (1, P)
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                out = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                          max_new_tokens=max_tokens, do_sample=False, eos_token_id=eos,
                                          pad_token_id=self._tokenizer.pad_token_id,
                                          logits_processor=processors or None)
        except Exception as e:  # e.g. a mask that allows nothing: counted, the run goes on
            return Generation("", 0, 0, time.perf_counter() - t0, "error", error=f"{type(e).__name__}: {e}"[:300])
        gen_s = time.perf_counter() - t0
        new = out[0, len(prompt_ids):].tolist()
        stopped = bool(new) and new[-1] in eos
        body = new[:-1] if stopped else new
        return Generation(self._tokenizer.decode(body, skip_special_tokens=True), len(new),
                          proc.forced_steps if proc else 0, gen_s, "stop" if stopped else "length",
                          error=proc.failed if proc else None)


# --- structgen ---------------------------------------------------------------------------------------------

class StructgenGenerator:
    """structgen's engine (LLMEngine, one request at a time) with the public compiler."""

    name = "structgen"

    def __init__(self, tokenizer, config_overrides: dict | None = None, structgen_options: dict | None = None):
        try:
            from structgen import compile_json_schema
            from structgen.engine.config import EngineConfig
            from structgen.engine.engine import LLMEngine
            from structgen.engine.requests import GenerateRequest, SamplingParams
        except ImportError as e:
            raise EngineUnavailable(f"structgen's engine is not available: {e}") from e
        self._compile = compile_json_schema
        self._request = GenerateRequest
        self._sampling = SamplingParams
        self._tokenizer = tokenizer
        self._options = dict(structgen_options or {})
        self.engine = LLMEngine.from_config(EngineConfig(**(config_overrides or {})))
        self._n = 0

    def compile(self, schema):
        try:
            return self._compile(schema, self._tokenizer, **self._options)
        except Exception as e:  # ConstraintError, or anything else the compiler raises on odd schemas
            raise ConstraintRefused(f"{type(e).__name__}: {e}"[:300]) from e

    def generate(self, prompt_ids: list[int], compiled, max_tokens: int) -> Generation:
        self._n += 1
        req = self._request(f"bench-{self._n}", list(prompt_ids),
                            self._sampling(temperature=0.0, max_tokens=max_tokens), constraint=compiled)
        t0 = time.perf_counter()
        try:
            out = self.engine.generate([req])[req.request_id]
        except Exception as e:
            return Generation("", 0, 0, time.perf_counter() - t0, "error", error=f"{type(e).__name__}: {e}"[:300])
        gen_s = time.perf_counter() - t0
        eos = self._tokenizer.eos_token_ids
        body = [t for t in out.token_ids if t not in eos]
        return Generation(self._tokenizer.decode(body, skip_special_tokens=True), out.usage.completion_tokens,
                          out.usage.forced_tokens, gen_s, out.finish_reason or "error",
                          ttft_s=out.timings.ttft_s, error=out.error)

    def close(self) -> None:
        self.engine.close()

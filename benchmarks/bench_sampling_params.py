"""Micro-benchmark: decode tokens/s of the engine with the issue-13 sampling parameters off vs on, at batch 1/8/32.

"on" = every request uses all of them at once (logit_bias, frequency/presence/repetition penalties, DRY over the
whole output, min_p, logprobs with 5 alternatives, temperature 0.8 seeded): the worst case. "off" = plain seeded
sampling at temperature 0.8. Drafting is off so every step is one row per sequence. Each request gets a
`--prompt`-token prompt and decodes with ignore_eos; after every request has its first token, `--steps` steps are
timed (the output grows to ~steps + 1 tokens, which is what DRY and the penalties scan).

    .venv/bin/python benchmarks/bench_sampling_params.py [--model default] [--device cpu] [--batches 1 8 32]
        [--steps 20] [--prompt 200] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from structgen.engine.config import EngineConfig
from structgen.engine.engine import LLMEngine
from structgen.engine.requests import GenerateRequest, SamplingParams

ON = dict(temperature=0.8, logit_bias={11: 2.0, 28: -3.0}, frequency_penalty=0.3, presence_penalty=0.2,
          repetition_penalty=1.1, dry_multiplier=0.8, min_p=0.05, logprobs=True, top_logprobs=5)
OFF = dict(temperature=0.8)


def decode_tok_s(engine: LLMEngine, batch: int, params: dict, steps: int, prompt_len: int, tag: str) -> float:
    vocab = engine.model.config.vocab_size
    for i in range(batch):
        prompt = [(37 * i + 11 * j) % (vocab - 300) + 200 for j in range(prompt_len)]
        engine.add_request(GenerateRequest(f"{tag}-{i}", prompt, SamplingParams(
            max_tokens=steps + 8, ignore_eos=True, seed=i, **params)))
    seqs = [engine._seqs[f"{tag}-{i}"] for i in range(batch)]
    while any(s.num_output_tokens == 0 for s in seqs):
        engine.step()
    sync = torch.cuda.synchronize if engine.model.device.type == "cuda" else (lambda: None)
    sync()
    before = sum(s.num_output_tokens for s in seqs)
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.step()
    sync()
    dt = time.perf_counter() - t0
    made = sum(s.num_output_tokens for s in seqs) - before
    engine.abort_all()
    engine.drain_outputs()
    return made / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--prompt", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    engine = LLMEngine.from_config(EngineConfig(model=a.model, device=a.device, forced_runs=False, speculation="off",
                                                enable_prefix_cache=False, max_num_seqs=max(a.batches)))
    decode_tok_s(engine, 2, ON, 3, 16, "warm")  # first calls (allocations, kernels) out of the timings
    print(f"model={a.model} device={engine.model.device} steps={a.steps} prompt={a.prompt} rounds={a.rounds}")
    print("| batch | off tok/s | on tok/s | cost |")
    print("|---:|---:|---:|---:|")
    for b in a.batches:
        res = {"off": [], "on": []}
        for r in range(a.rounds):       # in turns, so drifting machine load hits both alike
            for name, p in (("off", OFF), ("on", ON)):
                res[name].append(decode_tok_s(engine, b, p, a.steps, a.prompt, f"{name}{b}.{r}"))
        off, on = statistics.median(res["off"]), statistics.median(res["on"])
        print(f"| {b} | {off:.1f} | {on:.1f} | {100 * (off - on) / off:+.1f}% |", flush=True)
    engine.close()


if __name__ == "__main__":
    main()

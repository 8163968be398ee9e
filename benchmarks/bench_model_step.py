"""Micro-benchmark: milliseconds per decode forward at batch 1/8/32, ours vs transformers' forward with its own cache.

Both models hold the same weights, every sequence has `--context` tokens of context, and each timed step feeds one
new token per sequence. This is the floor the engine loop builds on (no sampling, masking or scheduling).

    .venv/bin/python benchmarks/bench_model_step.py [--model default] [--batches 1 8 32] [--context 256]
        [--steps 10] [--device cpu] [--dtype float32] [--random-weights CONFIG_JSON] [--out table.md]
        [--attention torch native] [--rounds 3]   # one row per attention backend, timed in turns
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from structgen.engine.forward_batch import build_forward_batch
from structgen.engine.kv_cache import KVCache
from structgen.engine.model_config import ModelConfig
from structgen.engine.weights import build_model, default_dtype, load_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def random_hf_tensors(config_dict: dict, seed: int = 0, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """HF-named random weights for a config (speed does not depend on the values), made on `device`."""
    cfg = ModelConfig.from_dict(config_dict)
    g = torch.Generator(device=device).manual_seed(seed)
    h, i = cfg.hidden_size, cfg.intermediate_size

    def r(*shape):
        return (torch.randn(*shape, generator=g, device=device, dtype=dtype) * 0.02)

    def ones(n):
        return torch.ones(n, device=device, dtype=dtype)

    t = {"model.embed_tokens.weight": r(cfg.vocab_size, h), "model.norm.weight": ones(h)}
    if not cfg.tie_word_embeddings:
        t["lm_head.weight"] = r(cfg.vocab_size, h)
    for n in range(cfg.num_layers):
        p = f"model.layers.{n}."
        t[p + "self_attn.q_proj.weight"] = r(cfg.q_size, h)
        t[p + "self_attn.k_proj.weight"] = r(cfg.kv_size, h)
        t[p + "self_attn.v_proj.weight"] = r(cfg.kv_size, h)
        if cfg.qkv_bias:
            t[p + "self_attn.q_proj.bias"] = r(cfg.q_size)
            t[p + "self_attn.k_proj.bias"] = r(cfg.kv_size)
            t[p + "self_attn.v_proj.bias"] = r(cfg.kv_size)
        t[p + "self_attn.o_proj.weight"] = r(h, cfg.q_size)
        t[p + "mlp.gate_proj.weight"] = r(i, h)
        t[p + "mlp.up_proj.weight"] = r(i, h)
        t[p + "mlp.down_proj.weight"] = r(h, i)
        t[p + "input_layernorm.weight"] = ones(h)
        t[p + "post_attention_layernorm.weight"] = ones(h)
    return t


def bench_ours(model, batch: int, context: int, steps: int, block_size: int = 16, rows: int = 1) -> list[float]:
    """`rows` new tokens per sequence per step (1 = decode; more = a decode row plus drafts to verify)."""
    device, dtype = model.device, model.dtype
    total = context + steps * rows + 1
    blocks_per_seq = -(-total // block_size)
    budget = KVCache.bytes_per_block(model.config, block_size, dtype) * blocks_per_seq * batch
    kv = KVCache.from_budget(model.config, budget, block_size, device, dtype)
    tables = [list(range(s * blocks_per_seq, (s + 1) * blocks_per_seq)) for s in range(batch)]
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(100, model.config.vocab_size, (batch, context), generator=g).tolist()
    for s in range(batch):  # prefill one sequence at a time, like the engine's chunked prefill would
        model(build_forward_batch([prompts[s]], [0], [tables[s]], block_size, device), kv)
    times = []
    tok = [[7] * rows] * batch
    for step in range(steps):
        fb = build_forward_batch(tok, [context + step * rows] * batch, tables, block_size, device,
                                 num_logits=[rows] * batch)
        _sync(device)
        t0 = time.perf_counter()
        model(fb, kv)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def bench_hf(hf, batch: int, context: int, steps: int, device: torch.device) -> list[float]:
    from transformers import DynamicCache

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(100, hf.config.vocab_size, (batch, context), generator=g).to(device)
    cache = DynamicCache()
    with torch.inference_mode():
        hf(input_ids=ids, past_key_values=cache, use_cache=True)
        times = []
        tok = torch.full((batch, 1), 7, dtype=torch.int64, device=device)
        for _ in range(steps):
            _sync(device)
            t0 = time.perf_counter()
            hf(input_ids=tok, past_key_values=cache, use_cache=True)
            _sync(device)
            times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--random-weights", help="a config.json: random weights of that shape instead of --model")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--rows", type=int, nargs="+", default=[1],
                    help="new tokens per sequence per step (>1: verify rows; ours only, transformers at 1)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1, help="times each backend is timed, in turns (--steps each)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: per device)")
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers peer")
    ap.add_argument("--attention", nargs="+", default=[None],
                    help="attention backends to time ours with, side by side (torch | native | triton)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", help="also write the table (markdown) here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else default_dtype(device)

    hf = None
    if args.random_weights:
        cfg_dict = json.loads(Path(args.random_weights).read_text())
        tensors = random_hf_tensors(cfg_dict, device=device, dtype=dtype)
        ours = {b: build_model(ModelConfig.from_dict(cfg_dict), tensors, device, dtype,
                               max_positions=args.context + args.steps * max(args.rows) + 16, attention_backend=b)
                for b in args.attention}
        if not args.no_hf:
            from transformers import AutoConfig, AutoModelForCausalLM

            hf_cfg = AutoConfig.for_model(**cfg_dict)
            with torch.device(device):  # random init on the device: minutes on the host at 1-2 B parameters
                hf = AutoModelForCausalLM.from_config(hf_cfg, dtype=dtype)
            hf.load_state_dict(tensors, strict=False)
            hf = hf.eval()
        del tensors
        name = f"random weights, {Path(args.random_weights).name}"
    else:
        ours = {b: load_model(args.model, device, dtype, attention_backend=b) for b in args.attention}
        if not args.no_hf:
            from transformers import AutoModelForCausalLM

            from structgen.assets import prepare_default_model

            folder = prepare_default_model() if args.model == "default" else args.model
            hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).to(device).eval()
        name = args.model

    lines = [f"# decode step, {name}, {device.type} {dtype}, context {args.context}, "
             f"{torch.get_num_threads()} threads, median of {args.rounds} x {args.steps} steps",
             "", "| batch | rows/seq | attention | ours ms/step | transformers ms/step | speedup | ours rows/s |",
             "|---|---|---|---|---|---|---|"]
    for b in args.batches:
        for rows in args.rows:
            hf_ms = statistics.median(bench_hf(hf, b, args.context, args.steps, device)) * 1e3 \
                if hf and rows == 1 else float("nan")
            times: dict[str, list[float]] = {name: [] for name in ours}
            for _ in range(args.rounds):  # backends take turns, so machine drift falls on all of them alike
                for name, model in ours.items():
                    times[name] += bench_ours(model, b, args.context, args.steps, rows=rows)
            for name, model in ours.items():
                ours_ms = statistics.median(times[name]) * 1e3
                lines.append(f"| {b} | {rows} | {model.attention_backend} | {ours_ms:.1f} | {hf_ms:.1f} | "
                             f"{hf_ms / ours_ms:.2f}x | {b * rows / ours_ms * 1e3:.0f} |")
                print(lines[-1], flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

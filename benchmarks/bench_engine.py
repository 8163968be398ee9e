"""Issue 3's measurement: our engine vs transformers `generate` (unconstrained, and with llguidance masking),
same model, same extraction prompts behind a shared instruction, at 1, 8 and 32 concurrent requests.

    .venv/bin/python benchmarks/bench_engine.py [--concurrency 1,8,32] [--max-tokens 48] [--threads N]
        [--systems ours,ours-constrained,ours-constrained-nodraft,ours-matched,ours-constrained-nocache,hf,
         hf-llguidance] [--out DIR]

Same as `structgen bench engine`; prints a Markdown table with ratios (tok/s vs transformers at the same
concurrency; constrained vs ours-matched, our unconstrained decoding of the same token counts, by wall time).
"""

from structgen.bench.engine import main

if __name__ == "__main__":
    raise SystemExit(main())

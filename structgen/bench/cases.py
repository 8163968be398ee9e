"""Benchmark inputs: JSONSchemaBench schemas with their labelled instances, and the extraction set.

The data lives outside the repository (/work/shared/data, see its README); `default_data_dir()` finds it beside
the checkout or through STRUCTGEN_DATA_DIR.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path


def default_data_dir() -> Path:
    """`$STRUCTGEN_DATA_DIR`, else `<repo>/../shared/data`."""
    env = os.environ.get("STRUCTGEN_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


def default_schemas_dir() -> Path:
    """`<repo>/schemas`: the ready extraction schemas and their example documents (a checkout, not the wheel)."""
    return Path(__file__).resolve().parents[2] / "schemas"


@dataclass(frozen=True)
class Instance:
    data: object
    valid: bool


@dataclass(frozen=True)
class SchemaCase:
    """One schema file: its split (category), its id "<split>/<file>", the schema and labelled instances."""

    split: str
    case_id: str
    schema: dict | bool
    instances: tuple[Instance, ...] = field(default_factory=tuple)


def instance_text(data: object) -> str:
    """The text walked through every engine: compact `json.dumps`, non-ASCII kept as UTF-8.

    Compact separators because every engine's JSON grammar admits them (structgen's default whitespace is
    compact); raw UTF-8 so multi-byte characters split across tokens are exercised, not hidden by escapes.
    """
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def list_splits(data_dir: Path) -> list[str]:
    return sorted(p.name for p in Path(data_dir).iterdir() if p.is_dir())


def load_schema_cases(data_dir: Path, splits: list[str] | None = None, sample: int = 0, limit: int = 0,
                      seed: int = 0) -> list[SchemaCase]:
    """Schemas of `splits` (all when None/empty) under `data_dir` (a jsonschemabench/dev folder).

    sample: keep a seeded random `sample` files per split (0 = every file); limit: at most `limit` in total
    (0 = no limit), taken evenly across splits. Order is deterministic for a given (sample, seed).
    Raises FileNotFoundError for a missing folder, ValueError for an unknown split or bad counts.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"benchmark data folder not found: {data_dir} (set --data or STRUCTGEN_DATA_DIR)")
    if sample < 0 or limit < 0:
        raise ValueError("sample and limit must be >= 0")
    available = list_splits(data_dir)
    chosen = list(splits) if splits else available
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; available: {', '.join(available)}")
    per_split: list[list[Path]] = []
    for split in chosen:
        files = sorted((data_dir / split).glob("*.json"))
        if sample and sample < len(files):
            rng = random.Random(f"{seed}:{split}")  # per-split seed: adding a split keeps the others' samples
            files = sorted(rng.sample(files, sample))
        per_split.append(files)
    if limit:
        # round-robin across splits so a small limit still touches every split
        picked: list[Path] = []
        i = 0
        while len(picked) < limit and any(i < len(f) for f in per_split):
            picked += [f[i] for f in per_split if i < len(f)][: limit - len(picked)]
            i += 1
        keep = set(picked)
        per_split = [[p for p in files if p in keep] for files in per_split]
    cases = []
    for split, files in zip(chosen, per_split):
        for path in files:
            cases.append(read_schema_case(path, split))
    return cases


def read_schema_case(path: Path, split: str | None = None) -> SchemaCase:
    doc = json.loads(Path(path).read_text())
    split = split or Path(path).parent.name
    instances = tuple(Instance(t["data"], bool(t["valid"])) for t in doc.get("tests", []))
    return SchemaCase(split=split, case_id=f"{split}/{Path(path).name}", schema=doc["schema"], instances=instances)


@dataclass(frozen=True)
class ExtractionItem:
    item_id: str
    schema: dict
    text: str
    expected: dict | None = None
    acceptable: dict | None = None  # {top-level key: [accepted values]}; "" in a list: the key may be omitted


def load_extraction(path: Path) -> list[ExtractionItem]:
    """A folder of extraction/dev-style files ({schema, text, expected, acceptable}) or a JSON Lines file of the
    same (expected and acceptable optional)."""
    path = Path(path)
    if path.is_dir():
        docs = [(p.stem, json.loads(p.read_text())) for p in sorted(path.glob("*.json"))]
    elif path.is_file():
        docs = [(str(i), json.loads(line)) for i, line in enumerate(path.read_text().splitlines()) if line.strip()]
    else:
        raise FileNotFoundError(f"workload not found: {path}")
    items = []
    for name, doc in docs:
        if "schema" not in doc or "text" not in doc:
            raise ValueError(f"workload item {name} needs 'schema' and 'text' keys")
        items.append(ExtractionItem(str(doc.get("id", name)), doc["schema"], doc["text"], doc.get("expected"),
                                    doc.get("acceptable")))
    if not items:
        raise ValueError(f"workload {path} holds no items")
    return items

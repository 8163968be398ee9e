"""Loading what an engine runs from an EngineConfig: the model (HF folder, GGUF, "default"), its tokenizer, and the
draft model when config.speculation == "draft_model"."""

from __future__ import annotations

from .config import EngineConfig

# Positions an engine serves when neither the config nor the model says fewer.
MAX_POSITIONS_CAP = 8192


def load_engine_parts(config: EngineConfig):
    """(model, tokenizer, draft model or None) for `config`; sets torch's CPU threads when the config asks."""
    import torch

    from .. import settings
    from .weights import load_model

    threads = config.num_threads or settings.get("STRUCTGEN_NUM_THREADS")
    if threads and config.resolved_device == "cpu":
        torch.set_num_threads(threads)
    device = config.resolved_device
    max_len = min(config.max_model_len or MAX_POSITIONS_CAP, MAX_POSITIONS_CAP)
    dtype = getattr(torch, config.resolved_dtype)
    if config.quantization == "int8" and device != "cpu":
        # device "auto" resolved to cuda: EngineConfig could not refuse it before torch was asked
        raise ValueError(f"quantization 'int8' runs on cpu only, and device 'auto' resolved to {device!r}: "
                         "pass device='cpu' (--device cpu)")
    model = _quantized(load_model(config.model, device, dtype, max_positions=max_len), config)
    tokenizer = load_tokenizer(config.model)
    draft = None
    if config.speculation == "draft_model":
        if config.draft_model == config.model:
            draft = model               # self-drafting (a test of the path): share the weights
        else:
            check_draft_tokenizer(config.draft_model, tokenizer)
            draft = _quantized(load_model(config.draft_model, device, dtype, max_positions=max_len), config)
    return model, tokenizer, draft


def _quantized(model, config: EngineConfig):
    """`model`, quantized in place as config.quantization says."""
    if config.quantization == "int8":
        from .quantization import quantize_int8_

        quantize_int8_(model)
    return model


def check_draft_tokenizer(draft_path: str, tokenizer) -> None:
    """ValueError when the draft model's folder has a vocabulary other than the target's (token -> id; chat
    template and EOS may differ, e.g. a base model drafting for its instruct sibling). A folder without a
    tokenizer is checked by vocabulary size only, when the engine is built."""
    try:
        draft_tok = load_tokenizer(draft_path)
    except (FileNotFoundError, OSError, ValueError):
        return
    if draft_tok.hf.get_vocab(with_added_tokens=True) != tokenizer.hf.get_vocab(with_added_tokens=True):
        raise ValueError(f"the draft model {draft_path!r} has another vocabulary than the target model "
                         f"({draft_tok!r} vs {tokenizer!r}): a draft model must share the target's tokenizer")


def load_tokenizer(model: str):
    """The tokenizer of `model`: "default", a model folder, or a file inside one (e.g. a GGUF)."""
    from pathlib import Path

    from ..tokenizer import Tokenizer, default_tokenizer

    if model == "default":
        return default_tokenizer()
    path = Path(model).expanduser()
    folder = path.parent if path.is_file() else path
    return Tokenizer.from_dir(folder)

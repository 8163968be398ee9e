"""EngineConfig: every knob of the decoding engine, validated once, immutable afterwards."""

from __future__ import annotations

from dataclasses import dataclass

_DEVICES = ("auto", "cpu", "cuda")
_DTYPES = ("auto", "float32", "bfloat16", "float16")
_SPECULATION = ("off", "prompt_lookup", "draft_model")


@dataclass(frozen=True)
class EngineConfig:
    """Settings of one engine (one model on one device).

    `model` is "default" (the embedded SmolLM2-135M-Instruct) or a Hugging Face folder / GGUF file path.
    """

    model: str = "default"
    device: str = "auto"                # "auto" = cuda when available, else cpu
    dtype: str = "auto"                 # "auto" = float32 on cpu, bfloat16 on cuda
    # KV pool size in bytes; None = 1 GiB on cpu (~23k tokens of SmolLM2-135M), 8 GiB on cuda.
    kv_cache_bytes: int | None = None
    block_size: int = 16                # tokens per KV block; also the radix cache's page size
    max_num_seqs: int = 64              # most sequences in one step's batch
    # Tokens one forward may process (decode rows + prefill chunks). Long prompts are prefilled in chunks
    # so that running decodes are never stalled behind one big prefill.
    max_num_batched_tokens: int = 1024
    max_model_len: int | None = None    # None = the model's max_position_embeddings, capped at 8192
    compile_workers: int = 2            # threads compiling constraints off the loop thread
    enable_prefix_cache: bool = True
    # Fill the batch bitmask in a helper thread while the forward runs (torch releases the GIL).
    overlap_mask_fill: bool = False
    # Issue 6: append the constraint's forced continuation without sampling (jump-forward), and propose drafts
    # (prompt lookup: spans of the prompt the output is copying). Both are verified by the model in the next
    # forward, so greedy output is token-for-token the same with them off; on by default because extraction output
    # is mostly scaffolding and copied spans (0.49 forwards per output token on the extraction dev set).
    forced_runs: bool = True
    speculation: str = "prompt_lookup"  # "off" | "prompt_lookup" | "draft_model" (issue 6)
    num_speculative_tokens: int = 4
    draft_model: str | None = None
    seed: int = 0                       # base seed for requests that sample without their own seed
    num_threads: int = 0                # torch intra-op threads on cpu (0 = torch's default)

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("EngineConfig.model must be 'default' or a path to a model folder / GGUF file")
        if self.device not in _DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"EngineConfig.device must be one of {_DEVICES} or 'cuda:N', got {self.device!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"EngineConfig.dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if self.kv_cache_bytes is not None and self.kv_cache_bytes <= 0:
            raise ValueError(f"EngineConfig.kv_cache_bytes must be positive (bytes), got {self.kv_cache_bytes}")
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise ValueError(f"EngineConfig.block_size must be a power of two >= 1, got {self.block_size}")
        if self.max_num_seqs < 1:
            raise ValueError(f"EngineConfig.max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"EngineConfig.max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs "
                f"({self.max_num_seqs}) so that every running sequence can decode in one step")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"EngineConfig.max_model_len must be >= 2, got {self.max_model_len}")
        if self.compile_workers < 1:
            raise ValueError(f"EngineConfig.compile_workers must be >= 1, got {self.compile_workers}")
        if self.speculation not in _SPECULATION:
            raise ValueError(f"EngineConfig.speculation must be one of {_SPECULATION}, got {self.speculation!r}")
        if self.speculation == "draft_model" and not self.draft_model:
            raise ValueError("EngineConfig.speculation='draft_model' needs EngineConfig.draft_model (a path)")
        if not 1 <= self.num_speculative_tokens <= 16:
            raise ValueError(f"EngineConfig.num_speculative_tokens must be in 1..16, got {self.num_speculative_tokens}")
        if self.num_threads < 0:
            raise ValueError(f"EngineConfig.num_threads must be >= 0, got {self.num_threads}")

    @property
    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def resolved_dtype(self) -> str:
        if self.dtype != "auto":
            return self.dtype
        return "float32" if self.resolved_device == "cpu" else "bfloat16"

    @property
    def resolved_kv_cache_bytes(self) -> int:
        if self.kv_cache_bytes is not None:
            return self.kv_cache_bytes
        return (1 << 30) if self.resolved_device == "cpu" else (8 << 30)

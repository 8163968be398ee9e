"""EngineConfig: every knob of the decoding engine, validated once, immutable afterwards."""

from __future__ import annotations

from dataclasses import dataclass, field

_DEVICES = ("auto", "cpu", "cuda")
_DTYPES = ("auto", "float32", "bfloat16", "float16")
_SPECULATION = ("off", "prompt_lookup", "draft_model")
_ISOLATION = ("process", "thread")
_QUANTIZATION = ("none", "int8")


@dataclass(frozen=True)
class EngineConfig:
    """Settings of one engine (one model on one device).

    `model` is "default" (the embedded SmolLM2-135M-Instruct) or a Hugging Face folder / GGUF file path.
    Each field's metadata is the help of its `structgen serve` flag (structgen/server/cli.py derives the flags).
    """

    model: str = field(default="default", metadata={
        "help": "'default' (the embedded SmolLM2-135M-Instruct) or a model folder / GGUF file"})
    device: str = field(default="auto", metadata={
        "help": "auto | cpu | cuda | cuda:N (auto: cuda when available)"})
    dtype: str = field(default="auto", metadata={
        "help": "weights and KV cache dtype (auto: float32 on cpu, bfloat16 on cuda)", "choices": _DTYPES})
    # Issue 18: dynamic int8 quantization of every matmul (structgen/engine/quantization.py): int8 weights, each
    # call's activations quantized per token, int8 x int8 -> int32 matmuls; CPU only, float32 everywhere else.
    quantization: str = field(default="none", metadata={
        "help": "none | int8 (cpu only: int8 weights and per-token int8 activations in every matmul, W8A8 "
                "dynamic; faster decode, outputs differ from float32's: benchmarks/RESULTS.md)",
        "choices": _QUANTIZATION})
    # KV pool size in bytes; None = 1 GiB on cpu (~23k tokens of SmolLM2-135M), 8 GiB on cuda.
    kv_cache_bytes: int | None = field(default=None, metadata={
        "help": "KV pool size in bytes (default: 1 GiB on cpu, 8 GiB on cuda)"})
    block_size: int = field(default=16, metadata={
        "help": "tokens per KV block, a power of two (also the prefix cache's page)"})
    max_num_seqs: int = field(default=64, metadata={"help": "most sequences per batch"})
    # Tokens one forward may process (decode rows + prefill chunks). Long prompts are prefilled in chunks
    # so that running decodes are never stalled behind one big prefill.
    max_num_batched_tokens: int = field(default=1024, metadata={
        "help": "most tokens one forward processes (decode rows + prefill chunks)"})
    max_model_len: int | None = field(default=None, metadata={
        "help": "context length cap in tokens (default: the model's, at most 8192)"})
    compile_workers: int = field(default=2, metadata={
        "help": "worker processes (or threads) compiling constraints off the engine's loop thread"})
    # Issue 14: a compile runs in a worker process that is killed past its time or memory limit (STRUCTGEN_COMPILE_
    # TIMEOUT_S / STRUCTGEN_COMPILE_MEMORY_MB); "thread" keeps the old in-process compiles (cooperative limits only).
    compile_isolation: str = field(default="process", metadata={
        "help": "where constraints compile: worker processes with hard limits, or threads", "choices": _ISOLATION})
    compile_queue: int = field(default=64, metadata={
        "help": "most compiles running or waiting at once; past it RESOURCE_EXHAUSTED"})
    # 0: compile_workers - 1 (at least 1), so one client can never hold every worker.
    compile_per_client: int = field(default=0, metadata={
        "help": "most compiles of one client (API key / connection) holding workers at once (0: workers - 1)"})
    enable_prefix_cache: bool = field(default=True, metadata={
        "flag": "--prefix-cache", "help": "reuse the KV of shared prompt prefixes (radix cache)"})
    # Worth a thread because torch releases the GIL during the forward (and the native mask walk releases it too).
    # On by default since issue 17: measured on 2 CPU cores with cold masks (benchmarks/RESULTS.md), the mask time
    # left on the step went from 0.37 / 0.83 / 6.15 to 0.16 / 0.33 / 0.86 ms at 1 / 8 / 32 concurrent.
    overlap_mask_fill: bool = field(default=True, metadata={
        "help": "fill the batch bitmask in a helper thread while the forward runs"})
    # Issue 6: append the constraint's forced continuation without sampling (jump-forward), and propose drafts
    # (prompt lookup: spans of the prompt the output is copying). Both are verified by the model in the next
    # forward, so greedy output is token-for-token the same with them off; on by default because extraction output
    # is mostly scaffolding and copied spans (0.49 forwards per output token on the extraction dev set).
    forced_runs: bool = field(default=True, metadata={
        "help": "append the constraint's forced continuation without sampling"})
    speculation: str = field(default="prompt_lookup", metadata={  # issue 6
        "help": "draft proposer, verified by the model", "choices": _SPECULATION})
    num_speculative_tokens: int = field(default=4, metadata={
        "help": "most proposed tokens per step, 1..16 (k is adapted below it)"})
    draft_model: str | None = field(default=None, metadata={
        "help": "model folder / GGUF file of a draft model of the same tokenizer (implies --speculation "
                "draft_model; the --model value drafts with the target's own weights)"})
    seed: int = field(default=0, metadata={"help": "base seed for requests that sample without their own seed"})
    num_threads: int = field(default=0, metadata={"help": "torch intra-op threads on cpu (0: torch's default)"})

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("EngineConfig.model must be 'default' or a path to a model folder / GGUF file")
        if self.device not in _DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"EngineConfig.device must be one of {_DEVICES} or 'cuda:N', got {self.device!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"EngineConfig.dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if self.quantization not in _QUANTIZATION:
            raise ValueError(f"EngineConfig.quantization must be one of {_QUANTIZATION}, got {self.quantization!r}")
        if self.quantization == "int8":
            if self.device.startswith("cuda"):
                raise ValueError("EngineConfig.quantization='int8' runs on cpu only (torch's int8 matmul on cuda takes "
                                 "no fewer than 17 rows, and a decode step has 1-64): use device='cpu', or "
                                 "bfloat16 on cuda")
            if self.dtype not in ("auto", "float32"):
                raise ValueError(f"EngineConfig.quantization='int8' keeps activations and the KV cache in float32: "
                                 f"use dtype 'auto' or 'float32', not {self.dtype!r}")
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
        if self.compile_isolation not in _ISOLATION:
            raise ValueError(f"EngineConfig.compile_isolation must be one of {_ISOLATION}, got "
                             f"{self.compile_isolation!r}")
        if self.compile_queue < 1:
            raise ValueError(f"EngineConfig.compile_queue must be >= 1, got {self.compile_queue}")
        if self.compile_per_client < 0:
            raise ValueError(f"EngineConfig.compile_per_client must be >= 0, got {self.compile_per_client}")
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

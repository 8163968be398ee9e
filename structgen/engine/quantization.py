"""Dynamic int8 quantization of a LlamaModel's matmuls (`EngineConfig.quantization="int8"`, CPU only).

W8A8 with dynamic activation scales, the scheme torch now points quantize_dynamic's users to (torchao's
`Int8DynamicActivationInt8WeightConfig`): each (out, in) weight is quantized once to int8 with one scale per output
row (symmetric, scale = max|row| / 127); every forward quantizes its activations to int8 with one scale per token
(row of x), multiplies int8 x int8 -> int32 with `torch._int_mm` (oneDNN / VNNI on x86) and scales the int32 sums
back to float32. Once quantized the float weights are dropped, so nothing can fall back to them.

Why not `torch.ao.quantization.quantize_dynamic` itself: our model holds plain fused parameters, not `nn.Linear`, so
it would find nothing to replace; and its op (`torch.ops.quantized.linear_dynamic`: one activation scale per call,
7-bit with reduce_range) was measured far off on SmolLM2-135M, whose hidden states carry a few huge activations
(one outlier token or channel sets the scale of every row): on a 37-token prompt its logits were 38% off fp32's
(relative L2) and the top token agreed at 51% of positions, against 12% / 76% with per-token scales and 1.9% / 89%
for bfloat16 (2026-12-08, a throwaway script over the same forward; the down projection alone gave 49% / 46%).

What is quantized: every decoder layer's four matmuls and the logits projection (an int8 copy of it; the embedding
lookup keeps its float32 table, which tied models share with the logits): every `nn.Linear` of the HF model. Norms,
RoPE, attention and the KV cache stay float32.
"""

from __future__ import annotations

import torch

# The projections of one decoder layer, by the name prefix of their weights in model.DecoderLayer.
LAYER_PROJECTIONS = ("qkv", "o", "gate_up", "down")


class Int8Linear:
    """`x @ weight.T + bias` with `weight` held as int8 (one scale per output row) and int8 activations (one scale
    per row of x, computed at each call).

    Build from a float (out, in) weight; call with a 2-d float32 CPU tensor (rows, in) -> (rows, out) float32.
    Immutable after construction; safe to share between threads (the weight is only read).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        if weight.dim() != 2 or weight.device.type != "cpu":
            raise ValueError(f"int8 quantization takes a 2-d CPU weight, got {tuple(weight.shape)} on "
                             f"{weight.device}")
        w = weight.detach().float()  # (out, in)
        self.scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)  # (out,) float32
        self.weight = torch.round(w / self.scale[:, None]).clamp_(-127, 127).to(torch.int8).contiguous()  # (out, in)
        self.bias = None if bias is None else bias.detach().float().contiguous()  # (out,)
        self.out_features, self.in_features = w.shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        xq, x_scale = quantize_rows(x)  # (rows, in) int8, (rows, 1) float32
        # NOTE: weight.t() is a view: _int_mm reads the (out, in) rows as a column-major (in, out) operand.
        y = torch._int_mm(xq, self.weight.t()).float()  # (rows, out) exact int32 sums, as float32
        y.mul_(x_scale).mul_(self.scale)
        return y if self.bias is None else y.add_(self.bias)

    def dequantized_weight(self) -> torch.Tensor:
        """(out, in) float32: what the int8 weight stands for (int8 * its row's scale)."""
        return self.weight.float() * self.scale[:, None]

    def __repr__(self) -> str:
        return f"Int8Linear(in={self.in_features}, out={self.out_features})"


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (rows, in) float -> (int8 (rows, in), float32 scales (rows, 1)): symmetric, one scale per row, so that
    x ~= int8 * scale; an all-zero row gets a tiny scale and zeros."""
    x = x.float()
    scale = (x.abs().amax(dim=1, keepdim=True) / 127.0).clamp_min_(1e-12)  # (rows, 1)
    return torch.round(x / scale).clamp_(-127, 127).to(torch.int8), scale


def quantize_int8_(model) -> None:
    """Quantize `model` (a float32 LlamaModel on CPU) in place: its layers' matmuls and the logits projection run as
    `Int8Linear`, their float weights are released. Raises ValueError for another device or dtype, or a model that is
    already quantized."""
    if model.device.type != "cpu":
        raise ValueError(f"int8 quantization runs on cpu only (EngineConfig says why); the model is on "
                         f"{model.device}")
    if model.dtype != torch.float32:
        raise ValueError(f"int8 quantization takes a float32 model (activations stay float32), got {model.dtype}")
    if model.lm_head_int8 is not None:
        raise ValueError("the model is already quantized")
    for layer in model.layers:
        int8 = {}
        for part in LAYER_PROJECTIONS:
            bias = layer.qkv_bias if part == "qkv" else None
            int8[part] = Int8Linear(getattr(layer, f"{part}_weight"), bias)
            setattr(layer, f"{part}_weight", None)  # release the float copy: the forward can only use int8 now
        if layer.qkv_bias is not None:
            layer.qkv_bias = None  # packed with the qkv weight
        layer.int8 = int8
    model.lm_head_int8 = Int8Linear(model.output_weight())
    if model.lm_head_weight is not None:
        model.lm_head_weight = None  # untied: only the logits used it (a tied table stays for the embedding)


def is_quantized(model) -> bool:
    return getattr(model, "lm_head_int8", None) is not None

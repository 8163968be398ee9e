"""MaskBuffer: the preallocated host/device int32 bitmask rows a forward's logits are masked with (the runner's
step masks, the draft model's per-position masks). Row layout: structgen/fsm/bitmask.py."""

from __future__ import annotations

import torch


class MaskBuffer:
    """A step's mask rows: one preallocated int32 host buffer (R, W) (pinned on CUDA), its numpy view for cursors
    to fill row by row, and a device twin the filled rows are copied to. Nothing is allocated per step."""

    def __init__(self, rows: int, words: int, device: torch.device):
        self.host = torch.zeros((rows, words), dtype=torch.int32, pin_memory=device.type == "cuda")  # (R, W)
        self.np = self.host.numpy()     # a view: numpy row writes land in the tensor
        self._device = self.host if device.type == "cpu" else torch.empty_like(self.host, device=device)

    @property
    def num_rows(self) -> int:
        return self.host.shape[0]

    def on_device(self, n: int) -> torch.Tensor:
        """Rows [0, n) where the logits are: the host rows themselves on CPU, a non-blocking copy on CUDA."""
        if self._device is self.host:
            return self.host[:n]
        self._device[:n].copy_(self.host[:n], non_blocking=True)
        return self._device[:n]

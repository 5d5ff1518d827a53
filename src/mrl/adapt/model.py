"""The trainable form of an adaptor (torch); :meth:`AdaptorModule.export` gives the numpy arrays."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


class AdaptorModule(nn.Module):
    """``z = x @ R0 @ Q`` with ``R0`` fixed (the start) and ``Q`` kept orthogonal, from the identity;
    for ``mlp`` also ``z + relu(z W1 + b1) W2 + b2`` with a zero residual at the start.

    ``Q`` acts on the start's coordinates, so a fit on a rotated copy of the data (whose start is
    the rotated ``R0``, up to signs) follows the same path: the result does not depend on the
    input's coordinate order.
    """

    start: Tensor  # (D, D) the fixed start rotation, a buffer

    def __init__(self, kind: str, rotation: np.ndarray, hidden: int | None = None) -> None:
        super().__init__()
        d = rotation.shape[0]
        self.kind = kind
        self.register_buffer("start", torch.from_numpy(np.ascontiguousarray(rotation, dtype=np.float32)))
        self.rotate = nn.Linear(d, d, bias=False)
        with torch.no_grad():
            self.rotate.weight.copy_(torch.eye(d))
        # the identity is orthogonal, so the parametrisation starts exactly there; the Cayley map
        # costs one solve per step (matrix_exp cost half of a whole step at 384 dims)
        nn.utils.parametrizations.orthogonal(self.rotate, "weight", orthogonal_map="cayley")
        if kind == "mlp":
            h = hidden or d
            self.up = nn.Linear(d, h)
            self.down = nn.Linear(h, d)
            nn.init.zeros_(self.down.weight)
            nn.init.zeros_(self.down.bias)

    def forward(self, x: Tensor) -> Tensor:
        z = self.rotate(x @ self.start)  # (B, D)
        if self.kind == "mlp":
            z = z + self.down(torch.relu(self.up(z)))
        return z

    @torch.no_grad()
    def export(self) -> dict[str, np.ndarray]:
        def arr(t: Tensor) -> np.ndarray:
            return t.detach().float().cpu().numpy().copy()

        arrays = {"rotation": arr(self.start @ self.rotate.weight.T)}  # Linear computes x W^T
        if self.kind == "mlp":
            arrays.update(w1=arr(self.up.weight.T), b1=arr(self.up.bias), w2=arr(self.down.weight.T),
                          b2=arr(self.down.bias))
        return arrays

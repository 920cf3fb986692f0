"""Two-site merge and split: the move every sweeping algorithm (DMRG, ALS, TNN training) makes.

A core has shape ``(D_left, *phys, D_right)``. ``merge`` contracts the shared bond of two
neighbouring cores into a bond tensor; ``split`` factorises a bond tensor back by a truncated SVD.
"""

from __future__ import annotations

from typing import Literal

import torch

from entangle.errors import ShapeError
from entangle.tn.decompose import truncated_svd

__all__ = ["merge", "split"]


def merge(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Contract two neighbouring cores over their shared bond.

    Parameters
    ----------
    a : (Dl, *pa, D)
    b : (D, *pb, Dr)

    Returns
    -------
    theta : (Dl, *pa, *pb, Dr)
    """
    if a.shape[-1] != b.shape[0]:
        raise ShapeError(f"cannot merge cores: bond {a.shape[-1]} of {tuple(a.shape)} != {b.shape[0]} of {tuple(b.shape)}")
    return torch.tensordot(a, b, dims=([a.dim() - 1], [0]))


def split(theta: torch.Tensor, n_left: int, max_bond: int | None = None, cutoff: float | None = None,
          absorb: Literal["left", "right", "both"] = "right"
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Factorise a bond tensor into two cores by truncated SVD.

    Parameters
    ----------
    theta : (Dl, *pa, *pb, Dr)
    n_left : number of physical legs ``pa`` that go to the left core.
    max_bond, cutoff : truncation (see :mod:`entangle.tn.decompose`).
    absorb : which core takes the singular values. ``"right"`` leaves ``a`` left-isometric
        (sweeping left to right), ``"left"`` leaves ``b`` right-isometric, ``"both"`` gives each
        ``sqrt(S)``.

    Returns
    -------
    a : (Dl, *pa, k)
    b : (k, *pb, Dr)
    s : (k,) singular values across the new bond
    discarded : 0-dim tensor, Frobenius norm of the truncated part
    """
    if not 0 < n_left < theta.dim() - 2 + 1 or theta.dim() < 4:
        raise ShapeError(f"split: n_left={n_left} invalid for bond tensor of shape {tuple(theta.shape)}")
    left_shape = theta.shape[: 1 + n_left]
    right_shape = theta.shape[1 + n_left:]
    u, s, vh, discarded = truncated_svd(theta.reshape(left_shape.numel(), right_shape.numel()), max_bond, cutoff)
    if absorb == "right":
        vh = s.unsqueeze(1) * vh
    elif absorb == "left":
        u = u * s
    elif absorb == "both":
        root = torch.sqrt(s)
        u, vh = u * root, root.unsqueeze(1) * vh
    else:
        raise ShapeError(f"absorb must be 'left', 'right' or 'both', got {absorb!r}")
    k = s.shape[0]
    return u.reshape(*left_shape, k), vh.reshape(k, *right_shape), s, discarded

"""Entanglement entropies of Schmidt spectra."""

from __future__ import annotations

import torch

__all__ = ["von_neumann_entropy", "renyi_entropy", "schmidt_probabilities"]


def schmidt_probabilities(singular_values: torch.Tensor) -> torch.Tensor:
    """``p_i = s_i**2 / sum_j s_j**2``: the normalised entanglement spectrum. Shape ``(k,)``."""
    p = singular_values**2
    return p / p.sum()


def von_neumann_entropy(singular_values: torch.Tensor) -> torch.Tensor:
    """``S = -sum_i p_i ln p_i`` with ``p`` the normalised squared Schmidt values (nats).

    Jahromi & Orús (Sec. III D) write ``S = sum λ² log λ²`` for normalised λ; this is the same
    quantity with the sign that makes it non-negative.
    """
    p = schmidt_probabilities(singular_values)
    p = p[p > 0]
    return -(p * torch.log(p)).sum()


def renyi_entropy(singular_values: torch.Tensor, alpha: float) -> torch.Tensor:
    """Rényi entropy ``ln(sum p_i**alpha) / (1 - alpha)``; ``alpha -> 1`` gives von Neumann."""
    if abs(alpha - 1.0) < 1e-12:
        return von_neumann_entropy(singular_values)
    p = schmidt_probabilities(singular_values)
    return torch.log((p**alpha).sum()) / (1.0 - alpha)

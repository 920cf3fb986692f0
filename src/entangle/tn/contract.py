"""Einsum with contraction paths computed once per (equation, shapes) and cached.

Tensor networks contract the same few equations millions of times with identical shapes;
searching a path on every call would cost more than the contraction itself.
"""

from __future__ import annotations

from functools import lru_cache

import opt_einsum
import torch

__all__ = ["einsum"]


@lru_cache(maxsize=4096)
def _expression(equation: str, shapes: tuple[tuple[int, ...], ...]):
    return opt_einsum.contract_expression(equation, *shapes, optimize="optimal" if len(shapes) <= 4 else "greedy")


def einsum(equation: str, *operands: torch.Tensor) -> torch.Tensor:
    """``torch.einsum`` semantics, with the optimal pairwise order found once and reused.

    Two-operand contractions go straight to ``torch.einsum`` (there is no order to choose).
    """
    if len(operands) <= 2:
        return torch.einsum(equation, *operands)
    expr = _expression(equation, tuple(tuple(o.shape) for o in operands))
    return expr(*operands, backend="torch")

"""Riemannian Adam on the Stiefel manifold St(f, n) = {U ∈ R^{n×f} : UᵀU = I_f}.

Bécigneul & Ganea, *Riemannian adaptive optimization methods*, ICLR 2019 (Alg. 1), with the
embedded metric of the Stiefel manifold (Edelman, Arias & Smith, SIAM J. Matrix Anal. Appl. 20,
303 (1998), Sec. 2.2):

* tangent projection  P_U(G) = G − U sym(UᵀG),  sym(A) = (A + Aᵀ)/2;
* retraction          R_U(ξ) = qf(U + ξ), the Q factor of a QR decomposition with diag(R) > 0;
* vector transport    of the first moment by re-projection onto the new tangent space.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from entangle.errors import ConfigError, ShapeError
from entangle.tn.decompose import qr_positive

__all__ = ["project_tangent", "retract_qr", "StiefelAdam"]


def project_tangent(u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Project a Euclidean matrix g (n, f) onto the tangent space of St(f, n) at u (n, f)."""
    utg = u.T @ g  # (f, f)
    return g - u @ (0.5 * (utg + utg.T))


def retract_qr(u: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """QR retraction of a tangent step xi (n, f) at u (n, f): orthonormal columns, diag(R) > 0."""
    q, _ = qr_positive(u + xi)
    return q


class StiefelAdam(torch.optim.Optimizer):
    """Adam whose parameters are matrices with orthonormal columns, kept exactly on St(f, n).

    Parameters
    ----------
    params : iterable of (n, f) tensors with ``UᵀU = I``.
    lr, betas, eps : as in :class:`torch.optim.Adam`.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        if not lr > 0:
            raise ConfigError(f"StiefelAdam: lr must be > 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ConfigError(f"StiefelAdam: betas must lie in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2 or p.shape[0] < p.shape[1]:
                    raise ShapeError(f"StiefelAdam parameters must be (n, f) with n >= f, got {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - same contract as torch.optim.Optimizer.step
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for u in group["params"]:
                if u.grad is None:
                    continue
                state = self.state[u]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(u)
                    state["v"] = torch.zeros_like(u)
                state["step"] += 1
                t = state["step"]
                rgrad = project_tangent(u, u.grad)  # Riemannian gradient (n, f)
                m, v = state["m"], state["v"]
                m.mul_(beta1).add_(rgrad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(rgrad, rgrad, value=1 - beta2)
                m_hat = m / (1 - beta1**t)
                v_hat = v / (1 - beta2**t)
                direction = project_tangent(u, m_hat / (v_hat.sqrt() + group["eps"]))
                new_u = retract_qr(u, -group["lr"] * direction)
                u.copy_(new_u)
                m.copy_(project_tangent(new_u, m))  # transport the momentum
        return loss

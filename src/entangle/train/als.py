"""Two-site ALS/DMRG-style optimisation of the ETT cores of an ETN (Hodapp & Shapeev Sec. 4.3).

With the feature contractions ``A``, ``B`` and all other cores fixed, the energy (and hence the
forces and stress, which are linear maps of it) depends *linearly* on the merged two-site
tensor ``Θ = T^k T^{k+1}`` (:func:`entangle.so3.equivariant.merge`): the loss of eq. (47) is
an exact quadratic in the per-bond-sector matrices of ``Θ``. Each local problem is solved by
conjugate gradients on that quadratic (a Hessian–vector product is the difference of two
gradients, exact because the problem is quadratic), then ``Θ`` is split again by a block-wise
truncated SVD (:func:`entangle.so3.equivariant.split`), which may grow or shrink the bond
multiplicities per sector. Sweeps run left to right and back.

This optimises the tensor-train part only; the shared feature contractions are left as they
are (Sec. 7.2: weight sharing breaks multilinearity), so ALS is meant to be combined with (or
compared against) gradient training of all parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from entangle.models.etn import ETNPotential
from entangle.so3.equivariant import TwoSite, merge, split
from entangle.train.losses import LossWeights, potential_loss
from entangle.train.trainer import PreparedBatch, predict_batch

__all__ = ["ALSConfig", "als_sweeps"]


@dataclass
class ALSConfig:
    """Settings of the two-site sweeps.

    n_sweeps : back-and-forth sweeps; cg_iters : CG iterations per local problem;
    max_rank : largest multiplicity per bond sector after the split (None: no limit);
    cutoff : relative singular-value cutoff of the split; ridge : Tikhonov term ``ridge |Θ|²``.
    """

    n_sweeps: int = 2
    cg_iters: int = 20
    max_rank: int | None = None
    cutoff: float | None = 1e-10
    ridge: float = 1e-10


def _dense(two: TwoSite, theta: dict) -> torch.Tensor:
    return TwoSite(two.legs, two.bond, theta, two.row_layout, two.col_layout).to_dense()


def _loss_and_grad(model: ETNPotential, batches: Sequence[PreparedBatch], weights: LossWeights,
                   two: TwoSite, theta: dict, k: int, n_total: int, ridge: float
                   ) -> tuple[float, dict]:
    leaves = {s: t.detach().requires_grad_(True) for s, t in theta.items()}
    dense = _dense(two, leaves)  # [D_left, D_phys, D_phys, D_right]
    cores = model.dense_cores()
    cores = [c.detach() for c in cores[:k]] + [dense] + [c.detach() for c in cores[k + 2:]]
    total = 0.0
    grads = {s: torch.zeros_like(t) for s, t in leaves.items()}
    for item in batches:
        pred = predict_batch(model, item, forces=weights.forces > 0,
                             stress=weights.stress > 0 and bool(item.batch.stress_mask.any()),
                             cores=cores)
        loss, _ = potential_loss(pred, item.batch, weights)
        loss = loss / n_total + ridge * sum((t**2).sum() for t in leaves.values())
        g = torch.autograd.grad(loss, list(leaves.values()), retain_graph=True)
        for s, gs in zip(leaves, g):
            grads[s] += gs
        total += float(loss.detach())
        dense = _dense(two, leaves)  # fresh graph for the next batch
        cores[k] = dense
    return total, grads


def _dot(a: dict, b: dict) -> torch.Tensor:
    return sum((a[s] * b[s]).sum() for s in a)


def _solve_local(model, batches, weights, two, k, n_total, cfg) -> tuple[dict, float]:
    """CG on the exact quadratic loss in Θ, started from the current Θ."""
    x = {s: t.detach().clone() for s, t in two.theta.items()}
    zero = {s: torch.zeros_like(t) for s, t in x.items()}
    _, g0 = _loss_and_grad(model, batches, weights, two, zero, k, n_total, cfg.ridge)  # -b
    loss, gx = _loss_and_grad(model, batches, weights, two, x, k, n_total, cfg.ridge)
    r = {s: -gx[s] for s in x}
    p = {s: r[s].clone() for s in x}
    rr = _dot(r, r)
    for _ in range(cfg.cg_iters):
        if float(rr) < 1e-28:
            break
        _, gp = _loss_and_grad(model, batches, weights, two, p, k, n_total, cfg.ridge)
        hp = {s: gp[s] - g0[s] for s in x}  # H p, exact for a quadratic
        alpha = rr / _dot(p, hp)
        x = {s: x[s] + alpha * p[s] for s in x}
        r = {s: r[s] - alpha * hp[s] for s in x}
        rr_new = _dot(r, r)
        p = {s: r[s] + (rr_new / rr) * p[s] for s in x}
        rr = rr_new
    final, _ = _loss_and_grad(model, batches, weights, two, x, k, n_total, cfg.ridge)
    return x, final


def als_sweeps(model: ETNPotential, batches: Sequence[PreparedBatch], weights: LossWeights,
               n_train: int, config: ALSConfig | None = None) -> list[dict[str, Any]]:
    """Two-site ALS sweeps over the ETT cores of ``model`` (in place).

    Parameters
    ----------
    model : ETNPotential with ``d >= 2``
    batches : prepared training batches (:func:`entangle.train.trainer.prepare_batches`)
    weights : loss weights of eq. (47)
    n_train : number of training structures (the loss is a mean over them)

    Returns
    -------
    list of records ``{"sweep", "bond", "loss", "bond_dims"}`` after every local update.
    """
    cfg = config or ALSConfig()
    if model.config.d < 2:
        raise ValueError("two-site ALS needs an ETT of order d >= 2")
    history = []
    d = model.config.d
    order = list(range(d - 1)) + list(range(d - 3, 0, -1))
    for sweep in range(cfg.n_sweeps):
        for step, k in enumerate(order):
            forward = step < d - 1
            two = merge(model.core_tensor(k), model.core_tensor(k + 1))
            with torch.enable_grad():
                theta, loss = _solve_local(model, batches, weights, two, k, n_train, cfg)
            two.theta = theta
            a, b, spectra = split(two, max_rank=cfg.max_rank, cutoff=cfg.cutoff,
                                  absorb="right" if forward else "left")
            model.set_core(k, a)
            model.set_core(k + 1, b)
            history.append({"sweep": sweep, "bond": k, "loss": loss,
                            "bond_dims": {f"{l},{p}": int(s.numel())
                                          for (l, p), s in spectra.items()}})
    return history

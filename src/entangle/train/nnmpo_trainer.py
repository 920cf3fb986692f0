"""Training of NN-MPO potentials: exact ALS/DMRG-like sweeps over the cores + Riemannian Adam.

Hino & Kurashige, arXiv:2410.23858, Sec. II.B. The loss (standardised units) is

    L = mean_b (V(x_b) − E_b)² + w_f · mean_b Σ_k (F(x_b) − F_b)_k²

With U, w, b fixed the model is linear in any one core (or any merged pair of neighbouring
cores), so one sweep step is a ridge least-squares problem. Each data point gives 1 + f rows: its
energy, and for every latent mode k the derivative ∂V/∂q_k (φ^(k) replaced by dφ^(k)/dq_k) with
target ``−(F U)_k``, weighted by √w_f. Every row is a single Kronecker product
``l ⊗ a (⊗ a') ⊗ r`` of a left environment, the site basis vector(s) and a right environment,
because mode k sits at exactly one place of the chain; the channel environments (B, 1+f, D) are
cached and updated as the sweep moves. Small local problems are solved by normal equations, large
ones (the two-site merged core) in the dual form ``c = Aᵀ (A Aᵀ + λ B I)⁻¹ t`` whose Gram matrix
is the Hadamard product of the factor Gram matrices. Two-site steps split the solution by a
truncated SVD (``cutoff``, ``max_bond``), which is how bond dimensions grow.

U is trained by Riemannian Adam on the Stiefel manifold (:mod:`entangle.train.stiefel`), w, b
(and optionally the cores) by Adam, on the analytic energy+force loss.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from entangle import io
from entangle.data import data_root
from entangle.errors import ConfigError, DataError, ModelFileError, ShapeError, check_keys
from entangle.models.nnmpo import NNMPO, NNMPOConfig
from entangle.tn.decompose import qr_positive
from entangle.tn.sweep import merge, split
from entangle.train.stiefel import StiefelAdam

__all__ = [
    "EV_TO_CM1", "TrainData", "load_h2co_arrays", "make_train_data", "canonicalize", "als_sweep",
    "adam_epochs", "training_loss", "evaluate_arrays", "predict_arrays", "fold_scales", "resolve_data_dir",
    "NNMPOTrainer", "fit_h2co",
]

EV_TO_CM1 = 8065.544  # 1 eV in cm^-1


# ------------------------------------------------------------------------------------------ data
def _check_arrays(x: np.ndarray, y: np.ndarray, f: np.ndarray,
                  source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, f = np.asarray(x), np.asarray(y), np.asarray(f)
    if x.ndim != 2:
        raise ShapeError(f"{source}: x must be (n_points, n_coords), got shape {x.shape}")
    n = x.shape[0]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,):
        raise ShapeError(f"{source}: y must be (n_points,) or (n_points, 1) with n_points={n}, got {y.shape}")
    if f.shape != x.shape:
        raise ShapeError(f"{source}: forces must have the shape of x {x.shape}, got {f.shape}")
    for name, arr in (("x", x), ("y", y), ("forces", f)):
        finite = np.isfinite(arr.reshape(n, -1)).all(axis=1)
        if not finite.all():
            raise DataError("non-finite value", source=source, index=int(np.flatnonzero(~finite)[0]), field=name)
    return x.astype(np.float64), y.astype(np.float64), f.astype(np.float64)


def load_h2co_arrays(directory: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Load the Pompon H2CO splits from ``directory`` (files ``{x,y,f}_{split}.npy``).

    Returns
    -------
    dict split -> (x (P, 6) in √mₑ·a₀, y (P,) in eV, forces (P, 6) in eV/(√mₑ·a₀)), for every
    split among train / validation / test present in the directory (train is required).
    """
    directory = Path(directory)
    out = {}
    for split_name in ("train", "validation", "test"):
        paths = [directory / f"{v}_{split_name}.npy" for v in ("x", "y", "f")]
        if not all(p.is_file() for p in paths):
            if split_name == "train":
                missing = [str(p) for p in paths if not p.is_file()]
                raise DataError(f"missing file(s) {missing}", source=str(directory))
            continue
        arrays = [np.load(p, allow_pickle=False) for p in paths]
        out[split_name] = _check_arrays(*arrays, source=str(paths[0].parent / f"*_{split_name}.npy"))
    return out


@dataclass
class TrainData:
    """A split in standardised units: x/sx, y/sy, F/(sy/sx); float64 tensors."""

    x: torch.Tensor  # (B, n)
    y: torch.Tensor  # (B,)
    f: torch.Tensor  # (B, n)


def make_train_data(x: np.ndarray, y: np.ndarray, f: np.ndarray, x_scale: float, y_scale: float,
                    dtype: torch.dtype = torch.float64) -> TrainData:
    """Standardise one split with the training scales."""
    x, y, f = _check_arrays(x, y, f, "data")
    return TrainData(torch.as_tensor(x / x_scale, dtype=dtype), torch.as_tensor(y / y_scale, dtype=dtype),
                     torch.as_tensor(f * x_scale / y_scale, dtype=dtype))


# --------------------------------------------------------------------------------- tensor trains
def canonicalize(cores: list[torch.Tensor], centre: int) -> list[torch.Tensor]:
    """Mixed-canonical form by QR/LQ: cores left of ``centre`` left-isometric, right of it
    right-isometric; the represented tensor is unchanged. cores[k]: (D_{k-1}, N, D_k)."""
    cores = [c.clone() for c in cores]
    for k in range(centre):
        dl, nb, dr = cores[k].shape
        q, r = qr_positive(cores[k].reshape(dl * nb, dr))
        cores[k] = q.reshape(dl, nb, q.shape[1])
        cores[k + 1] = torch.tensordot(r, cores[k + 1], dims=([1], [0]))
    for k in range(len(cores) - 1, centre, -1):
        dl, nb, dr = cores[k].shape
        q, r = qr_positive(cores[k].reshape(dl, nb * dr).T)
        cores[k] = q.T.reshape(q.shape[1], nb, dr)
        cores[k - 1] = torch.tensordot(cores[k - 1], r.T, dims=([2], [0]))
    return cores


def _site_mats(phi: torch.Tensor, core: torch.Tensor) -> torch.Tensor:
    dl, nb, dr = core.shape
    return (phi @ core.permute(1, 0, 2).reshape(nb, dl * dr)).view(-1, dl, dr)  # (B, Dl, Dr)


def _grow_left(env: torch.Tensor, phi: torch.Tensor, dphi: torch.Tensor, core: torch.Tensor, k: int) -> torch.Tensor:
    """Absorb site k into a left channel environment (B, C, Dl) -> (B, C, Dr)."""
    new = torch.bmm(env, _site_mats(phi, core))  # (B, C, Dr)
    new[:, 1 + k] += torch.bmm(env[:, :1], _site_mats(dphi, core))[:, 0]  # channel k was zero
    return new


def _grow_right(env: torch.Tensor, phi: torch.Tensor, dphi: torch.Tensor, core: torch.Tensor, k: int) -> torch.Tensor:
    """Absorb site k into a right channel environment (B, C, Dr) -> (B, C, Dl)."""
    new = torch.bmm(env, _site_mats(phi, core).transpose(1, 2))  # (B, C, Dl)
    new[:, 1 + k] += torch.bmm(env[:, :1], _site_mats(dphi, core).transpose(1, 2))[:, 0]
    return new


class _Sweeper:
    """Cached channel environments for ALS on one data set; channel 0 = energy, 1+k = ∂/∂q_k."""

    def __init__(self, phis, dphis, cores, y, grad_target, force_weight):
        self.phis, self.dphis = phis, dphis
        self.f = len(cores)
        self.n = y.shape[0]
        self.c = 1 + self.f
        self.cores = list(cores)
        w = torch.full((self.c,), math.sqrt(force_weight), dtype=y.dtype)
        w[0] = 1.0
        self.row_w = w  # (C,)
        self.target = torch.cat([y[:, None], grad_target], dim=1) * w  # (B, C)
        self.left = [None] * (self.f + 1)
        self.right = [None] * (self.f + 1)
        unit = torch.zeros(self.n, self.c, 1, dtype=y.dtype)
        unit[:, 0] = 1.0
        self.left[0] = unit
        self.right[self.f] = unit.clone()

    def build_right(self, down_to: int) -> None:
        for k in range(self.f - 1, down_to - 1, -1):
            self.right[k] = _grow_right(self.right[k + 1], self.phis[k], self.dphis[k], self.cores[k], k)

    def update_left(self, k: int) -> None:
        self.left[k + 1] = _grow_left(self.left[k], self.phis[k], self.dphis[k], self.cores[k], k)

    def update_right(self, k: int) -> None:
        self.right[k] = _grow_right(self.right[k + 1], self.phis[k], self.dphis[k], self.cores[k], k)

    def factors(self, p: int, n_sites: int) -> list[torch.Tensor]:
        """Row factors [l (M, Dl), a_p (M, N), ..., r (M, Dr)] of the local least-squares problem."""
        chan = torch.arange(self.c)
        mode = chan - 1
        lsel = torch.where((chan >= 1) & (mode < p), chan, 0)
        rsel = torch.where((chan >= 1) & (mode >= p + n_sites), chan, 0)
        left = self.left[p][:, lsel] * self.row_w[None, :, None]  # (B, C, Dl)
        right = self.right[p + n_sites][:, rsel]  # (B, C, Dr)
        out = [left.reshape(self.n * self.c, -1)]
        for j in range(n_sites):
            site = p + j
            a = self.phis[site][:, None, :].expand(self.n, self.c, -1).clone()  # (B, C, N)
            a[:, 1 + site] = self.dphis[site]
            out.append(a.reshape(self.n * self.c, -1))
        out.append(right.reshape(self.n * self.c, -1))
        return out

    def solve(self, p: int, n_sites: int, ridge: float, anchor: torch.Tensor | None = None) -> torch.Tensor:
        """Ridge least squares for the core(s) at p..p+n_sites-1: returns (Dl, N, [N,] Dr).

        Minimises ``(1/B) ||A c − t||² + ridge ||c − anchor||²`` (anchor = 0 if None).
        """
        fac = self.factors(p, n_sites)
        t = self.target.reshape(-1)  # (M,)
        shape = [x.shape[1] for x in fac]
        if anchor is not None:
            return anchor + self._solve(fac, t - _apply_rows(fac, anchor), shape, ridge)
        return self._solve(fac, t, shape, ridge)

    def solve_cg(self, p: int, start: torch.Tensor, ridge: float, iters: int) -> torch.Tensor:
        """A few Jacobi-preconditioned CG iterations on the one-site normal equations
        ``(AᵀA + λB I) c = Aᵀt``, warm-started from the current core ``start`` (Dl, N, Dr).
        Each iteration costs two factored products (≈ 2 M K multiply-adds), no Gram matrix."""
        fac = self.factors(p, 1)
        t = self.target.reshape(-1)
        lam = ridge * self.n

        def normal(c: torch.Tensor) -> torch.Tensor:
            return _apply_rows_t(fac, _apply_rows(fac, c)) + lam * c

        diag = torch.einsum("ri,rj,rk->ijk", fac[0] ** 2, fac[1] ** 2, fac[2] ** 2) + lam  # (Dl, N, Dr)
        inv_diag = 1.0 / diag.clamp_min(torch.finfo(diag.dtype).tiny)
        c = start.clone()
        res = _apply_rows_t(fac, t) - normal(c)
        z = inv_diag * res
        d = z.clone()
        rz = torch.sum(res * z)
        for _ in range(iters):
            nd = normal(d)
            denom = torch.sum(d * nd)
            if not denom > 0:
                break
            step = rz / denom
            c = c + step * d
            res = res - step * nd
            z = inv_diag * res
            rz_new = torch.sum(res * z)
            d = z + (rz_new / rz) * d
            rz = rz_new
        return c

    def _solve(self, fac: list[torch.Tensor], t: torch.Tensor, shape: list[int], ridge: float) -> torch.Tensor:
        n_unknown = math.prod(shape)
        m = t.shape[0]
        lam = ridge * self.n
        # normal equations cost ~ M K² + K³/3, the dual form ~ M² Σ dims + M³/3
        if m * n_unknown**2 + n_unknown**3 / 3 <= m * m * sum(shape) + m**3 / 3:
            a = fac[0]
            for x in fac[1:]:
                a = (a[:, :, None] * x[:, None, :]).reshape(m, -1)  # (M, K)
            gram = a.T @ a
            gram.diagonal().add_(lam)
            rhs = a.T @ t
            sol = _spd_solve(gram, rhs)
        else:
            gram = fac[0] @ fac[0].T  # (M, M)
            for x in fac[1:]:
                gram.mul_(x @ x.T)
            gram.diagonal().add_(lam)
            sol = _apply_rows_t(fac, _spd_solve(gram, t))  # c = Aᵀ α
        return sol.reshape(shape)


def _apply_rows(fac: list[torch.Tensor], c: torch.Tensor) -> torch.Tensor:
    """Row-wise contraction A c of the Khatri–Rao design matrix given by its factors: (M,)."""
    m = fac[0].shape[0]
    y = fac[0] @ c.reshape(fac[0].shape[1], -1)  # (M, rest)
    for x in fac[1:]:
        y = (y.reshape(m, x.shape[1], -1) * x[:, :, None]).sum(1)  # contract the next leg
    return y.reshape(m)


def _apply_rows_t(fac: list[torch.Tensor], v: torch.Tensor) -> torch.Tensor:
    """Transposed product Aᵀ v for a one- or two-site Khatri–Rao design matrix: (Dl, N, [N,] Dr)."""
    m = v.shape[0]
    half = (len(fac) + 1) // 2
    lhs = fac[0] * v[:, None]
    for x in fac[1:half]:
        lhs = (lhs[:, :, None] * x[:, None, :]).reshape(m, -1)
    rhs = fac[half]
    for x in fac[half + 1:]:
        rhs = (rhs[:, :, None] * x[:, None, :]).reshape(m, -1)
    return (lhs.T @ rhs).reshape([x.shape[1] for x in fac])


def _spd_solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:  # numerically indefinite (ridge too small): fall back to a symmetric solve
        return torch.linalg.lstsq(a, b[:, None]).solution[:, 0]
    return torch.cholesky_solve(b[:, None], chol)[:, 0]


def _local_solve(sw: _Sweeper, p: int, n_sites: int, ridge: float, cg_iters: int | None) -> torch.Tensor:
    if n_sites == 2:
        return sw.solve(p, 2, ridge, anchor=merge(sw.cores[p], sw.cores[p + 1]))
    if cg_iters is not None:
        return sw.solve_cg(p, sw.cores[p], ridge, cg_iters)
    return sw.solve(p, 1, ridge)


@torch.no_grad()
def als_sweep(model: NNMPO, data: TrainData, n_sites: int = 1, ridge: float = 1e-8, force_weight: float = 1.0,
              max_bond: int | None = None, cutoff: float | None = None, cg_iters: int | None = None) -> dict:
    """One left-to-right-to-left ALS sweep over the cores of ``model`` (U, w, b fixed).

    Parameters
    ----------
    model : NNMPO whose cores are updated in place (norm must be 1: standardised units).
    data : standardised training split.
    n_sites : 1 (ranks fixed; QR/LQ gauge moves) or 2 (merge → solve → truncated SVD split).
    ridge : λ in ``mean residual² + λ ||W||²`` (full-tensor norm: the other cores are isometric).
        Two-site steps are damped instead: ``mean residual² + λ ||θ − θ_current||²``, because the
        merged core has far more unknowns than data rows and the undamped minimum-norm solution is
        of high rank, which the truncated split would destroy.
    max_bond, cutoff : truncation of the two-site split (ignored for n_sites=1).
    cg_iters : one-site only: instead of the exact solve, this many preconditioned CG iterations
        warm-started from the current core (cheaper, for refinement once the fit is good).

    Returns
    -------
    dict with the sweep's last local ``loss`` and the ``bond_dims`` after the sweep.
    """
    if n_sites not in (1, 2):
        raise ConfigError(f"ALS n_sites must be 1 or 2, got {n_sites}")
    if not ridge >= 0:
        raise ConfigError(f"ALS ridge must be >= 0, got {ridge}")
    if cg_iters is not None and (n_sites != 1 or cg_iters < 1):
        raise ConfigError(f"cg_iters must be >= 1 and needs n_sites=1, got {cg_iters} with n_sites={n_sites}")
    f = model.n_latent
    if n_sites == 2 and f < 2:
        raise ConfigError("two-site ALS needs at least two latent modes")
    phis, dphis = model.site_bases(data.x)
    grad_target = -(data.f @ model.U)  # target ∂V/∂q (B, f)
    cores = canonicalize([c.detach() for c in model.cores], 0)
    sw = _Sweeper(phis, dphis, cores, data.y / model.norm, grad_target / model.norm, force_weight)
    sw.build_right(1 if n_sites == 1 else 2)
    last = f - n_sites
    # left to right
    for p in range(0, last + 1):
        sol = _local_solve(sw, p, n_sites, ridge, cg_iters)
        if n_sites == 1:
            if p < f - 1:
                dl, nb, dr = sol.shape
                q, r = qr_positive(sol.reshape(dl * nb, dr))
                sw.cores[p] = q.reshape(dl, nb, q.shape[1])
                sw.cores[p + 1] = torch.tensordot(r, sw.cores[p + 1], dims=([1], [0]))
            else:
                sw.cores[p] = sol
        else:
            a, b, _, _ = split(sol, 1, max_bond=max_bond, cutoff=cutoff, absorb="right")
            sw.cores[p], sw.cores[p + 1] = a, b
        if p < last:
            sw.update_left(p)
    # right to left
    for p in range(last, -1, -1):
        if p < last:
            sw.update_right(p + n_sites)
        sol = _local_solve(sw, p, n_sites, ridge, cg_iters)
        if n_sites == 1:
            if p > 0:
                dl, nb, dr = sol.shape
                q, r = qr_positive(sol.reshape(dl, nb * dr).T)
                sw.cores[p] = q.T.reshape(q.shape[1], nb, dr)
                sw.cores[p - 1] = torch.tensordot(sw.cores[p - 1], r.T, dims=([2], [0]))
            else:
                sw.cores[p] = sol
        else:
            a, b, _, _ = split(sol, 1, max_bond=max_bond, cutoff=cutoff, absorb="left")
            sw.cores[p], sw.cores[p + 1] = a, b
    model.set_cores(sw.cores)
    return {"bond_dims": model.bond_dims}


# ---------------------------------------------------------------------------------------- Adam
def training_loss(model: NNMPO, data: TrainData, force_weight: float = 1.0) -> torch.Tensor:
    """mean (ΔE)² + w_f mean Σ_k (ΔF_k)² on a (standardised) batch; differentiable."""
    energy, forces = model.energy_and_forces(data.x)
    return torch.mean((energy - data.y) ** 2) + force_weight * torch.mean(torch.sum((forces - data.f) ** 2, dim=1))


def adam_epochs(model: NNMPO, data: TrainData, epochs: int, lr: float = 1e-3, lr_u: float = 1e-3,
                batch_size: int | None = None, force_weight: float = 1.0, train_cores: bool = True,
                train_u: bool = True, seed: int = 0) -> float:
    """Adam on w, b (and the cores), Riemannian Adam on U; returns the last full-batch loss."""
    params = [model.w, model.b] + (list(model.cores) if train_cores else [])
    opt = torch.optim.Adam(params, lr=lr)
    opt_u = StiefelAdam([model.U], lr=lr_u) if train_u else None
    gen = torch.Generator().manual_seed(seed)
    n = data.x.shape[0]
    bs = n if batch_size is None else min(batch_size, n)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen) if bs < n else torch.arange(n)
        for start in range(0, n, bs):
            idx = perm[start:start + bs]
            opt.zero_grad(set_to_none=True)
            if opt_u is not None:
                opt_u.zero_grad(set_to_none=True)
            loss = training_loss(model, TrainData(data.x[idx], data.y[idx], data.f[idx]), force_weight)
            loss.backward()
            opt.step()
            if opt_u is not None:
                opt_u.step()
    with torch.no_grad():
        return float(training_loss(model, data, force_weight))


# ---------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_arrays(model: NNMPO, x, y, f) -> dict:
    """Errors of ``model`` (raw units: eV, eV/(√mₑ·a₀)) on arrays x (P, n), y (P,) or (P, 1), f (P, n).

    Returns
    -------
    dict with ``energy_mae_cm1``, ``energy_rmse_cm1``, ``energy_max_cm1``, ``force_rmse``,
    ``force_mae`` (force units of the data) and ``n_points``.
    """
    to_np = (lambda a: a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a)
    x, y, f = _check_arrays(to_np(x), to_np(y), to_np(f), "evaluate_arrays")
    if x.shape[1] != model.n_coords:
        raise ShapeError(f"evaluate_arrays: x has {x.shape[1]} coordinates, model expects {model.n_coords}")
    dtype = model.U.dtype
    energy, forces = model.energy_and_forces(torch.as_tensor(x, dtype=dtype))
    de = energy.double().numpy() - y
    df = forces.double().numpy() - f
    return {
        "energy_mae_cm1": float(np.mean(np.abs(de)) * EV_TO_CM1),
        "energy_rmse_cm1": float(np.sqrt(np.mean(de**2)) * EV_TO_CM1),
        "energy_max_cm1": float(np.max(np.abs(de)) * EV_TO_CM1),
        "force_rmse": float(np.sqrt(np.mean(df**2))),
        "force_mae": float(np.mean(np.abs(df))),
        "n_points": int(x.shape[0]),
    }


@torch.no_grad()
def predict_arrays(model: NNMPO, x) -> dict[str, np.ndarray]:
    """Energies and forces of ``model`` at the points ``x`` (P, n), raw units.

    Returns
    -------
    dict with ``energy`` (P,) in the model's energy unit (eV for :func:`fit_h2co` models) and
    ``forces`` (P, n) ``= −∂V/∂x`` (eV/(√mₑ·a₀)), float64 arrays.
    """
    if not isinstance(model, NNMPO):
        raise ConfigError(f"predict_arrays needs an NNMPO model, got {type(model).__name__}")
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim != 2 or x.shape[1] != model.n_coords:
        raise ShapeError(f"predict_arrays: x must have shape (n_points, {model.n_coords}), got {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"x must be numeric, got dtype {x.dtype}", field="x")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise DataError("non-finite coordinate", index=int(np.flatnonzero(~finite)[0]), field="x")
    energy, forces = model.energy_and_forces(torch.tensor(x, dtype=model.U.dtype))  # a copy: x may be read-only
    return {"energy": energy.double().cpu().numpy(), "forces": forces.double().cpu().numpy()}


def _load_nnmpo(path: str | Path) -> NNMPO:
    """:func:`entangle.io.load` that insists on an NNMPO."""
    model = io.load(path)
    if not isinstance(model, NNMPO):
        raise ModelFileError(f"{path}: holds a {type(model).__name__}, not an NNMPO")
    return model


# --------------------------------------------------------------------------------- raw units
def fold_scales(model: NNMPO, x_scale: float, y_scale: float) -> NNMPO:
    """A copy of a model trained on standardised data that works in raw units.

    With x_s = x/sx and V = sy · V_s(x_s): w → w/sx, x0 → x0·sx, norm → norm·sy.
    """
    raw = copy.deepcopy(model)
    with torch.no_grad():
        raw.w.div_(x_scale)
        raw.x0.mul_(x_scale)
        raw.norm.mul_(y_scale)
    return raw


# ------------------------------------------------------------------------------------- trainer
_STAGE_KEYS = {
    "als": {"kind", "sites", "sweeps", "ridge", "cutoff", "max_bond", "cg_iters"},
    "adam": {"kind", "epochs", "lr", "lr_u", "batch_size", "train_cores", "train_u"},
    "cycle": {"kind", "repeat", "stages"},
}


def _flatten_schedule(schedule: list, path: str = "schedule") -> list[dict]:
    if not isinstance(schedule, list) or not schedule:
        raise ConfigError(f"{path} must be a non-empty list of stages")
    steps = []
    for i, stage in enumerate(schedule):
        where = f"{path}[{i}]"
        if not isinstance(stage, dict) or stage.get("kind") not in _STAGE_KEYS:
            raise ConfigError(f"{where}: each stage needs kind in {sorted(_STAGE_KEYS)}, got {stage!r}")
        unknown = set(stage) - _STAGE_KEYS[stage["kind"]]
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)} for kind {stage['kind']!r}")
        if stage["kind"] == "cycle":
            inner = _flatten_schedule(stage.get("stages"), f"{where}.stages")
            repeat = int(stage.get("repeat", 1))
            if repeat < 1:
                raise ConfigError(f"{where}: repeat must be >= 1")
            steps.extend(copy.deepcopy(s) for _ in range(repeat) for s in inner)
        elif stage["kind"] == "als":
            if int(stage.get("sites", 1)) not in (1, 2):
                raise ConfigError(f"{where}: sites must be 1 or 2")
            if stage.get("max_bond") is not None and int(stage["max_bond"]) < 1:
                raise ConfigError(f"{where}: max_bond must be >= 1")
            steps.extend({**stage, "sweeps": 1} for _ in range(int(stage.get("sweeps", 1))))
        else:
            if int(stage.get("epochs", 1)) < 1:
                raise ConfigError(f"{where}: epochs must be >= 1")
            steps.append(dict(stage))
    return steps


@torch.no_grad()
def energy_errors_cm1(model: NNMPO, data: TrainData, y_scale: float) -> tuple[float, float]:
    """Energy MAE and RMSE (cm⁻¹) of a standardised model on a standardised split."""
    energy, _ = model.energy_and_forces(data.x)
    de = (energy - data.y) * y_scale * EV_TO_CM1
    return float(de.abs().mean()), float(de.pow(2).mean().sqrt())


class NNMPOTrainer:
    """Runs a schedule of ALS sweeps and Adam blocks with validation-based model selection.

    Parameters
    ----------
    model : NNMPO in standardised units (norm = 1), centres already set.
    train, valid : standardised splits.
    y_scale : energy scale (eV) used to report errors in cm⁻¹.
    schedule : list of stage dicts (see :func:`fit_h2co`).
    force_weight, ridge : loss weight of forces; default ALS ridge.
    out_dir : where checkpoints go (None: no checkpoints).
    run_config : the full run configuration, stored with checkpoints; resuming from a checkpoint
        written for a different configuration raises :class:`ConfigError`.
    patience : stop after this many steps without a validation improvement (None: never).
    max_seconds : wall-clock budget (None: unlimited).
    """

    def __init__(self, model: NNMPO, train: TrainData, valid: TrainData, y_scale: float, schedule: list,
                 force_weight: float = 1.0, ridge: float = 1e-8, out_dir: Path | None = None,
                 patience: int | None = None, max_seconds: float | None = None, seed: int = 0,
                 progress: bool = True, target_mae_cm1: float | None = None, run_config: dict | None = None):
        self.model, self.train, self.valid = model, train, valid
        self.y_scale = float(y_scale)
        self.steps = _flatten_schedule(schedule)
        self.force_weight, self.ridge = float(force_weight), float(ridge)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.patience, self.max_seconds, self.seed = patience, max_seconds, seed
        self.progress = progress
        self.target_mae_cm1 = target_mae_cm1
        self.done = 0
        self.best_mae = math.inf
        self.best_state: NNMPO | None = None
        self.history: list[dict] = []
        self.elapsed = 0.0
        self.since_best = 0
        self.time_to_target: float | None = None
        self.run_config = run_config

    def _errors(self, data: TrainData) -> tuple[float, float]:
        return energy_errors_cm1(self.model, data, self.y_scale)

    def _run_step(self, step: dict, index: int) -> None:
        if step["kind"] == "als":
            als_sweep(self.model, self.train, n_sites=int(step.get("sites", 1)),
                      ridge=float(step.get("ridge", self.ridge)), force_weight=self.force_weight,
                      max_bond=step.get("max_bond"), cutoff=step.get("cutoff"), cg_iters=step.get("cg_iters"))
        else:
            adam_epochs(self.model, self.train, int(step.get("epochs", 1)), lr=float(step.get("lr", 1e-3)),
                        lr_u=float(step.get("lr_u", step.get("lr", 1e-3))), batch_size=step.get("batch_size"),
                        force_weight=self.force_weight, train_cores=bool(step.get("train_cores", True)),
                        train_u=bool(step.get("train_u", True)), seed=self.seed * 100003 + index)

    def run(self) -> dict:
        """Run the remaining steps; returns the best validation metrics (cm⁻¹)."""
        bar = tqdm(total=len(self.steps), initial=self.done, disable=not self.progress, desc="nnmpo", leave=False)
        start = time.perf_counter() - self.elapsed
        while self.done < len(self.steps):
            step = self.steps[self.done]
            self._run_step(step, self.done)
            self.done += 1
            self.elapsed = time.perf_counter() - start
            train_mae, train_rmse = self._errors(self.train)
            val_mae, val_rmse = self._errors(self.valid)
            if not math.isfinite(val_mae):
                raise ConfigError(f"training diverged at step {self.done} ({step}); lower the learning rate")
            record = {"step": self.done, "kind": step["kind"], "time_s": round(self.elapsed, 2),
                      "train_mae_cm1": train_mae, "val_mae_cm1": val_mae, "val_rmse_cm1": val_rmse,
                      "bond_dims": self.model.bond_dims}
            self.history.append(record)
            if val_mae < self.best_mae:
                self.best_mae, self.since_best = val_mae, 0
                self.best_state = copy.deepcopy(self.model)
            else:
                self.since_best += 1
            if (self.target_mae_cm1 is not None and self.time_to_target is None
                    and val_mae <= self.target_mae_cm1):
                self.time_to_target = self.elapsed
            bar.update(1)
            bar.set_postfix(train=f"{train_mae:.2f}", val=f"{val_mae:.2f}", best=f"{self.best_mae:.2f}",
                            D=max(self.model.bond_dims, default=1))
            if self.out_dir is not None:
                self.save_checkpoint()
            if self.patience is not None and self.since_best >= self.patience:
                break
            if self.max_seconds is not None and self.elapsed >= self.max_seconds:
                break
        bar.close()
        return {"best_val_mae_cm1": self.best_mae, "steps_done": self.done, "elapsed_s": self.elapsed}

    # --------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> None:
        state = {"done": self.done, "best_mae": self.best_mae, "history": self.history, "elapsed": self.elapsed,
                 "since_best": self.since_best, "time_to_target": self.time_to_target,
                 "run_config": self.run_config}
        io.save(self.model, self.out_dir / "checkpoint", metadata={"trainer": state})
        if self.best_state is not None:
            io.save(self.best_state, self.out_dir / "checkpoint_best")

    def load_checkpoint(self) -> bool:
        """Resume from ``out_dir/checkpoint.*`` if present; returns whether it did."""
        if self.out_dir is None or not (self.out_dir / "checkpoint.json").is_file():
            return False
        state = io.read_header(self.out_dir / "checkpoint")["metadata"].get("trainer", {})
        if state.get("run_config") != json.loads(json.dumps(self.run_config)):
            raise ConfigError(f"{self.out_dir}: the checkpoint there was written for a different configuration; "
                              "use another output directory or resume: false")
        self.model = _load_nnmpo(self.out_dir / "checkpoint")
        self.done, self.best_mae, self.history = int(state["done"]), float(state["best_mae"]), state["history"]
        self.elapsed, self.since_best = float(state["elapsed"]), int(state["since_best"])
        self.time_to_target = state.get("time_to_target")
        if (self.out_dir / "checkpoint_best.json").is_file():
            self.best_state = _load_nnmpo(self.out_dir / "checkpoint_best")
        return True


# ------------------------------------------------------------------------------------ fit_h2co
_TOP_KEYS = {"data", "model", "train", "seed", "out_dir", "config_dir"}
H2CO_NAME = "h2co"  # `data: h2co` means data_root()/"h2co_pompon"
_MODEL_KEYS = {"n_latent", "n_basis", "activation", "bond_dims", "max_bond", "w_init"}
_TRAIN_KEYS = {"force_weight", "ridge", "threads", "max_minutes", "patience", "resume", "progress", "schedule",
               "target_mae_cm1", "centres", "restarts", "restart_sweeps"}


def pick_centres(data: TrainData, count: int, how: str = "random", seed: int = 0) -> torch.Tensor:
    """Indices of the ``count`` training points whose projections become the basis centres.

    ``"random"`` draws them uniformly (seeded), as the reference implementation does;
    ``"farthest"`` is greedy farthest-point sampling in the standardised coordinates, started at
    the lowest-energy point, so that the centres cover the sampled region evenly and do not
    depend on the seed.
    """
    n = data.x.shape[0]
    if count > n:
        raise ConfigError(f"{count} basis centres need at least {count} training points, got {n}")
    if how == "random":
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count]
    if how != "farthest":
        raise ConfigError(f"train.centres must be 'random' or 'farthest', got {how!r}")
    picked = [int(torch.argmin(data.y.reshape(-1)))]
    distance = (data.x - data.x[picked[0]]).norm(dim=1)
    for _ in range(count - 1):
        picked.append(int(torch.argmax(distance)))
        distance = torch.minimum(distance, (data.x - data.x[picked[-1]]).norm(dim=1))
    return torch.tensor(picked)


def select_restart(make_model, train: TrainData, valid: TrainData, y_scale: float, seeds: Sequence[int],
                   sweeps: int, ridge: float, force_weight: float, progress: bool = False) -> tuple[int, list[dict]]:
    """Pick the initialisation (seed: initial w, cores and, for random centres, the centres) whose
    model is best on validation after ``sweeps`` one-site ALS sweeps: random restarts with
    validation-based selection. The centres drawn at random move the final error by up to
    ~0.7 cm⁻¹ on H2CO; the ranking after a few sweeps is only a rough guide to the final one
    (BENCHMARKS.md: the best 8-sweep score among seeds 8–15 ended well behind seed 4).

    ``make_model(seed)`` returns a fresh standardised NNMPO with its centres set. Returns the
    best seed and one ``{"seed", "val_mae_cm1"}`` record per candidate.
    """
    if sweeps < 1:
        raise ConfigError(f"train.restart_sweeps must be >= 1, got {sweeps}")
    records = []
    for seed in tqdm(seeds, desc="restarts", disable=not progress, leave=False):
        model = make_model(seed)
        for _ in range(sweeps):
            als_sweep(model, train, n_sites=1, ridge=ridge, force_weight=force_weight)
        mae = energy_errors_cm1(model, valid, y_scale)[0]
        records.append({"seed": int(seed), "val_mae_cm1": mae if math.isfinite(mae) else math.inf})
    best = min(records, key=lambda r: r["val_mae_cm1"])
    return best["seed"], records


def resolve_data_dir(data: str | Path, config_dir: str | Path | None = None) -> Path:
    """Directory of the H2CO arrays named by a config's ``data`` entry.

    ``"h2co"`` means ``entangle.data.data_root() / "h2co_pompon"``; a relative path is taken
    relative to ``config_dir`` (the YAML file's directory) when given, else to the working directory.
    """
    if not isinstance(data, (str, Path)) or not str(data):
        raise ConfigError(f"config.data must be a directory path or {H2CO_NAME!r}, got {data!r}")
    if str(data) == H2CO_NAME:
        return data_root() / "h2co_pompon"
    path = Path(data)
    if not path.is_absolute() and config_dir is not None:
        path = Path(config_dir) / path
    return path


def fit_h2co(config: dict, out_dir: str | Path) -> dict:
    """Train an NN-MPO on the H2CO data from a config dict (as loaded from YAML) and save it.

    Config keys: ``data`` (directory with ``{x,y,f}_{train,validation}.npy``, or ``h2co`` for the
    shared copy, see :func:`resolve_data_dir`), ``config_dir`` (set by the CLI: relative ``data``
    paths are resolved against it), ``seed``,
    ``model`` (n_latent, n_basis, activation, bond_dims | max_bond, w_init), ``train``
    (force_weight, ridge, threads, max_minutes, patience, resume, progress, target_mae_cm1,
    centres = ``random`` | ``farthest`` (see :func:`pick_centres`), restarts (number of seeds
    ``seed, seed+1, ...`` tried, default 1) and restart_sweeps (ALS sweeps each, default 8) for
    :func:`select_restart`,
    schedule = list of stages ``{kind: als, sites, sweeps, ridge, cutoff, max_bond, cg_iters}``,
    ``{kind: adam, epochs, lr, lr_u, batch_size, train_cores, train_u}``,
    ``{kind: cycle, repeat, stages}``). See ``examples/h2co_nnmpo.yaml``.

    Writes ``out_dir/model.{safetensors,json}`` with :func:`entangle.io.save` (raw units: eV,
    √mₑ·a₀; read it back with ``entangle.io.load(out_dir)``), ``metrics.json`` and the
    ``checkpoint*`` files used to resume.

    Returns
    -------
    dict with validation ``energy_mae_cm1``, ``energy_rmse_cm1``, ``energy_max_cm1``, ``force_rmse``,
    ``force_mae``, a ``train`` dict with the same keys, ``num_parameters``, ``bond_dims``,
    ``wall_s`` and ``time_to_target_s`` (training seconds until the validation MAE first reached
    ``train.target_mae_cm1``, restart selection included).
    """
    check_keys(config, _TOP_KEYS, "config")
    mcfg, tcfg = config.get("model", {}), config.get("train", {})
    check_keys(mcfg, _MODEL_KEYS, "config.model")
    check_keys(tcfg, _TRAIN_KEYS, "config.train")
    if "data" not in config:
        raise ConfigError("config.data (directory of the H2CO arrays) is required")
    seed = int(config.get("seed", 0))
    threads = tcfg.get("threads")
    if threads is not None:
        torch.set_num_threads(int(threads))
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    data_dir = resolve_data_dir(config["data"], config.get("config_dir"))
    splits = load_h2co_arrays(data_dir)
    if "validation" not in splits:
        raise DataError("validation split missing", source=str(data_dir))
    x_tr, y_tr, f_tr = splits["train"]
    x_scale, y_scale = float(np.std(x_tr)), float(np.std(y_tr))
    train = make_train_data(x_tr, y_tr, f_tr, x_scale, y_scale)
    valid = make_train_data(*splits["validation"], x_scale, y_scale)
    n_coords = x_tr.shape[1]
    force_weight, ridge = float(tcfg.get("force_weight", 1.0)), float(tcfg.get("ridge", 1e-8))

    def make_model(model_seed: int) -> NNMPO:
        model_cfg = NNMPOConfig(n_coords=n_coords, n_latent=int(mcfg.get("n_latent", n_coords)),
                                n_basis=int(mcfg.get("n_basis", 21)),
                                activation=mcfg.get("activation", "moderate+silu"), bond_dims=mcfg.get("bond_dims"),
                                max_bond=int(mcfg.get("max_bond", 2)), seed=model_seed,
                                w_init=float(mcfg.get("w_init", 0.5)))
        model = NNMPO(model_cfg)
        model.set_centres(train.x[pick_centres(train, model_cfg.n_basis - 1, tcfg.get("centres", "random"),
                                               model_seed)])
        return model

    restarts = int(tcfg.get("restarts", 1))
    if restarts < 1:
        raise ConfigError(f"train.restarts must be >= 1, got {restarts}")
    resume = bool(tcfg.get("resume", True))
    restart_file = out_dir / "restarts.json"
    restarts_info = None  # {"seconds": selection wall time, "candidates": [{"seed", "val_mae_cm1"}]}
    if restarts > 1:
        if resume and (out_dir / "checkpoint.json").is_file() and restart_file.is_file():
            restarts_info = json.loads(restart_file.read_text())  # chosen before the interruption
        else:
            start = time.perf_counter()
            _, candidates = select_restart(make_model, train, valid, y_scale, range(seed, seed + restarts),
                                           int(tcfg.get("restart_sweeps", 8)), ridge, force_weight,
                                           progress=bool(tcfg.get("progress", True)))
            restarts_info = {"seconds": time.perf_counter() - start, "candidates": candidates}
            out_dir.mkdir(parents=True, exist_ok=True)
            io.atomic_write_text(restart_file, json.dumps(restarts_info, indent=2))
        seed = min(restarts_info["candidates"], key=lambda r: r["val_mae_cm1"])["seed"]
    model = make_model(seed)
    max_minutes = tcfg.get("max_minutes")
    if max_minutes is not None and restarts_info is not None:  # the budget covers the selection too
        max_minutes = float(max_minutes) - restarts_info["seconds"] / 60.0
    trainer = NNMPOTrainer(model, train, valid, y_scale, tcfg.get("schedule", []),
                           force_weight=force_weight, ridge=ridge,
                           out_dir=out_dir, patience=tcfg.get("patience"),
                           max_seconds=None if max_minutes is None else 60.0 * float(max_minutes), seed=seed,
                           progress=bool(tcfg.get("progress", True)), target_mae_cm1=tcfg.get("target_mae_cm1"),
                           run_config={k: v for k, v in config.items() if k not in ("out_dir", "config_dir")})
    if resume:
        trainer.load_checkpoint()
    summary = trainer.run()
    best = trainer.best_state if trainer.best_state is not None else trainer.model
    raw = fold_scales(best, x_scale, y_scale)
    time_to_target = trainer.time_to_target  # the restart selection is part of the time to reach it
    if time_to_target is not None and restarts_info is not None:
        time_to_target += restarts_info["seconds"]
    raw_splits = {"validation": splits["validation"], "train": splits["train"]}
    metrics = evaluate_arrays(raw, *raw_splits["validation"])
    metrics["train"] = evaluate_arrays(raw, *raw_splits["train"])
    metrics.update({"num_parameters": raw.num_parameters(), "bond_dims": raw.bond_dims,
                    "wall_s": time.perf_counter() - t0, "train_elapsed_s": summary["elapsed_s"],
                    "steps_done": summary["steps_done"], "time_to_target_s": time_to_target,
                    "seed": seed, "restarts": restarts_info,
                    "history": trainer.history})
    summary_metrics = {k: v for k, v in metrics.items() if k != "history"}
    io.save(raw, out_dir / "model", metadata={"units": {"x": "sqrt(m_e)*a0", "energy": "eV",
                                                         "forces": "eV/(sqrt(m_e)*a0)"},
                                              "data": str(data_dir), "metrics": summary_metrics})
    io.atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    return metrics

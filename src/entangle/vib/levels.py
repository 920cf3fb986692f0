"""Vibrational levels of a tensor-train potential model (NN-MPO or any look-alike).

The model supplies ``cores`` (f tensors ``(D_{k-1}, N, D_k)``), ``basis_values(k, q)``, the
orthonormal coordinator ``U: (n, f)`` (latent coordinates ``q = x U`` of mass-weighted
``x`` in ``sqrt(m_e) * a0``) and a scalar ``norm``; energies are in eV (NN-MPO) or Hartree.
Because ``U`` has orthonormal columns the kinetic energy in the latent coordinates is
``Σ_i -1/2 ∂²/∂q_i²`` (Hino & Kurashige, arXiv:2410.23858, sec. II.C), so each latent mode gets a
1-D DVR and the Hamiltonian MPO is ``V + T`` (:mod:`entangle.vib.pes_mpo`).

For a harmonic-oscillator DVR the latent frequencies ``ω̃_i = sqrt((Uᵀ diag(ω²) U)_ii)`` are the
frequencies of the harmonic part of the potential along each latent axis, with ``ω`` the
molecule's harmonic frequencies.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from entangle.errors import ConfigError, DataError, ShapeError
from entangle.tn import MPO
from entangle.vib.dmrg import DMRGResult, dmrg
from entangle.vib.dvr import DVRBasis, ho_dvr, sine_dvr
from entangle.vib.exact import exact_levels
from entangle.vib.pes_mpo import hamiltonian_mpo, mpo_diagonal, potential_mpo
from entangle.vib.units import HARTREE_TO_CM, HARTREE_TO_EV

__all__ = ["VibrationalProblem", "VibLevels", "latent_frequencies", "vibrational_problem", "vib_levels"]

_ENERGY_UNITS = {"ev": 1.0 / HARTREE_TO_EV, "hartree": 1.0}


@dataclass
class VibrationalProblem:
    """A vibrational Hamiltonian on a DVR product grid.

    Attributes
    ----------
    hamiltonian : MPO of ``V + T`` (Hartree).
    potential : diagonal MPO of ``V`` (Hartree).
    bases : one :class:`DVRBasis` per latent mode.
    latent_frequencies : (f,) HO-DVR frequencies ω̃ (Hartree), or None for a sine DVR without
        frequencies.
    v_origin : ``V(q = 0)`` (Hartree), the reference of the zero-point energy.
    """

    hamiltonian: MPO
    potential: MPO
    bases: list[DVRBasis]
    latent_frequencies: torch.Tensor | None
    v_origin: float


@dataclass
class VibLevels:
    """Vibrational levels.

    Attributes
    ----------
    energies : (n_states,) eigenvalues of ``V + T`` (Hartree, on the model's energy zero).
    levels_cm : (n_states,) ``E_k - E_0`` (cm^-1).
    zpe_cm : ``E_0 - V(q = 0)`` (cm^-1).
    method : ``"dmrg"`` or ``"exact"``.
    seconds : wall time of the eigen solution.
    problem : the :class:`VibrationalProblem` solved.
    dmrg : the :class:`DMRGResult` (``method="dmrg"`` only).
    """

    energies: torch.Tensor
    levels_cm: torch.Tensor
    zpe_cm: float
    method: str
    seconds: float
    problem: VibrationalProblem
    dmrg: DMRGResult | None = None


def latent_frequencies(U: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """``ω̃_i = sqrt((Uᵀ diag(ω²) U)_ii)``: U (n, f), frequencies ω (n,) -> (f,) (same unit as ω)."""
    U = torch.as_tensor(U, dtype=torch.float64)
    w = torch.as_tensor(frequencies, dtype=torch.float64)
    if w.dim() != 1 or U.dim() != 2 or U.shape[0] != w.shape[0]:
        raise ShapeError(f"frequencies {tuple(w.shape)} must be (n,) for U of shape {tuple(U.shape)}")
    if not torch.isfinite(w).all() or bool((w <= 0).any()):
        raise DataError("harmonic frequencies must be finite and positive", field="frequencies")
    return torch.sqrt(torch.einsum("ni,n,ni->i", U, w**2, U))


def _model_parts(model) -> tuple[list[torch.Tensor], torch.Tensor, float]:
    for name in ("cores", "basis_values", "U", "norm"):
        if not hasattr(model, name):
            raise ConfigError(f"the potential model needs a .{name} attribute (cores, basis_values(k, q), U, norm)")
    cores = [c.detach().to("cpu", torch.float64) for c in model.cores]
    U = torch.as_tensor(model.U).detach().to("cpu", torch.float64)
    if U.dim() != 2 or U.shape[1] != len(cores):
        raise ShapeError(f"model.U must be (n, f={len(cores)}), got {tuple(U.shape)}")
    norm = float(torch.as_tensor(model.norm).detach().cpu())
    return cores, U, norm


def _model_basis(model):
    ref = torch.as_tensor(model.U)

    def basis_values(k: int, q: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.basis_values(k, q.to(ref.device, ref.dtype)).detach().to("cpu", torch.float64)

    return basis_values


def vibrational_problem(model, basis: str = "ho", n_grid: int | Sequence[int] = 9, *,
                        frequencies: Sequence[float] | torch.Tensor | None = None,
                        bounds: Sequence[tuple[float, float]] | None = None, energy_unit: str = "eV",
                        mpo_cutoff: float | None = None) -> VibrationalProblem:
    """Build the Hamiltonian MPO of a tensor-train potential model on a DVR grid.

    Parameters
    ----------
    model : object with ``cores``, ``basis_values(k, q)``, ``U`` (n, f), ``norm``.
    basis : ``"ho"`` (harmonic-oscillator DVR, needs ``frequencies``) or ``"sine"`` (needs
        ``bounds`` or ``frequencies``).
    n_grid : points per latent mode (one int for all, or f ints).
    frequencies : (n,) harmonic frequencies of the molecule in cm^-1; the latent HO-DVR
        frequencies are ``ω̃ = sqrt(diag(Uᵀ diag(ω²) U))``.
    bounds : f pairs ``(a, b)`` (``sqrt(m_e) * a0``) for the sine DVR; by default the box spans the
        HO-DVR grid of the same size plus one outermost spacing on each side.
    energy_unit : unit of the model's energies, ``"eV"`` or ``"hartree"``.
    mpo_cutoff : optional relative cutoff for TT rounding of the potential on the grid.
    """
    cores, U, norm = _model_parts(model)
    f = len(cores)
    unit = energy_unit.lower()
    if unit not in _ENERGY_UNITS:
        raise ConfigError(f"energy_unit must be 'eV' or 'hartree', got {energy_unit!r}")
    sizes = [n_grid] * f if isinstance(n_grid, int) else list(n_grid)
    if len(sizes) != f or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ConfigError(f"n_grid must be an integer >= 1 or {f} of them, got {n_grid!r}")
    omega = None
    if frequencies is not None:
        omega = latent_frequencies(U, torch.as_tensor(frequencies, dtype=torch.float64) / HARTREE_TO_CM)
    if basis == "ho":
        if omega is None:
            raise ConfigError("the HO-DVR needs the harmonic frequencies (cm^-1) of the molecule: frequencies=...")
        bases = [ho_dvr(n, float(w)) for n, w in zip(sizes, omega)]
    elif basis == "sine":
        if bounds is None:
            if omega is None:
                raise ConfigError("the sine DVR needs bounds=[(a, b), ...] or frequencies to derive them")
            bounds = []
            for n, w in zip(sizes, omega):
                g = ho_dvr(max(n, 2), float(w)).grid
                pad = float(g[-1] - g[-2])
                bounds.append((float(g[0]) - pad, float(g[-1]) + pad))
        if len(bounds) != f:
            raise ConfigError(f"bounds needs {f} (a, b) pairs, got {len(bounds)}")
        bases = [sine_dvr(n, float(a), float(b)) for n, (a, b) in zip(sizes, bounds)]
    else:
        raise ConfigError(f"basis must be 'ho' or 'sine', got {basis!r}")
    basis_values = _model_basis(model)
    scale = norm * _ENERGY_UNITS[unit]
    potential = potential_mpo(cores, basis_values, [b.grid for b in bases], norm=scale, cutoff=mpo_cutoff)
    origin = torch.zeros(1, dtype=torch.float64)
    env = torch.ones(1, 1, dtype=torch.float64)
    for k, c in enumerate(cores):
        env = env @ torch.einsum("arb,r->ab", c, basis_values(k, origin)[0])  # (1, D_k)
    v_origin = float(env[0, 0]) * scale
    h = hamiltonian_mpo(potential, [b.kinetic for b in bases])
    return VibrationalProblem(h, potential, bases, omega, v_origin)


def vib_levels(model, n_states: int = 1, basis: str = "ho", n_grid: int | Sequence[int] = 9, *,
               frequencies: Sequence[float] | torch.Tensor | None = None,
               bounds: Sequence[tuple[float, float]] | None = None, energy_unit: str = "eV",
               method: str = "dmrg", max_bond: int = 32, cutoff: float | None = 1e-12, n_sweeps: int = 10,
               tol: float = 1e-10, seed: int = 0, mpo_cutoff: float | None = None,
               progress: bool = False) -> VibLevels:
    """Lowest vibrational levels of a tensor-train potential model.

    Parameters
    ----------
    model, basis, n_grid, frequencies, bounds, energy_unit, mpo_cutoff : see :func:`vibrational_problem`.
    n_states : number of levels.
    method : ``"dmrg"`` (:func:`entangle.vib.dmrg`) or ``"exact"`` (Lanczos on the full product
        grid, :func:`entangle.vib.exact_levels`; memory ``prod(n_grid)``).
    max_bond, cutoff, n_sweeps, tol : DMRG settings (``tol`` in Hartree).
    seed : seeds the DMRG initial states and the Lanczos start vector.

    Returns
    -------
    :class:`VibLevels`.

    >>> import torch
    >>> from entangle.vib import PolynomialTT, vib_levels
    >>> w = 0.01  # Hartree
    >>> v = PolynomialTT.from_terms([(w**2 / 2, (2, 0)), (w**2 / 2, (0, 2))])
    >>> out = vib_levels(v, 3, n_grid=6, frequencies=[w * 219474.63] * 2, energy_unit="hartree")
    >>> [round(float(e), 6) for e in out.levels_cm]
    [0.0, 2194.7463, 2194.7463]
    """
    if method not in ("dmrg", "exact"):
        raise ConfigError(f"method must be 'dmrg' or 'exact', got {method!r}")
    problem = vibrational_problem(model, basis, n_grid, frequencies=frequencies, bounds=bounds,
                                  energy_unit=energy_unit, mpo_cutoff=mpo_cutoff)
    start = time.perf_counter()
    result = None
    if method == "dmrg":
        gen = torch.Generator().manual_seed(seed)
        result = dmrg(problem.hamiltonian, n_states, max_bond=max_bond, cutoff=cutoff, n_sweeps=n_sweeps, tol=tol,
                      generator=gen, progress=progress)
        energies = result.energies
    else:
        size = math.prod(b.n for b in problem.bases)
        if n_states > size:
            raise ConfigError(f"requested {n_states} states but the product grid has only {size} points")
        kinetic = [b.kinetic for b in problem.bases]
        energies = exact_levels(mpo_diagonal(problem.potential), kinetic, n_states, seed=seed)
    seconds = time.perf_counter() - start
    levels = (energies - energies[0]) * HARTREE_TO_CM
    zpe = (float(energies[0]) - problem.v_origin) * HARTREE_TO_CM
    return VibLevels(energies, levels, zpe, method, seconds, problem, result)

"""6-D vibrational levels: two-site DMRG versus exact Lanczos on the full DVR product grid.

Builds an H2CO-like quartic force field as a tensor train (harmonic frequencies 1193.5, 1265.1,
1532.4, 1861.6, 2867.2, 2925.7 cm^-1; random cubic and quartic couplings in dimensionless normal
coordinates, seeded), exposes it like an NN-MPO model (``cores``, ``basis_values``, ``U``, ``norm``,
energies in eV), puts it on 9-point HO-DVR grids (9^6 = 531,441 points) and computes the lowest
levels with :func:`entangle.vib.vib_levels` by DMRG and by exact Lanczos. Prints JSON.

    PYTHONPATH=src python benchmarks/vib_levels.py --n-states 20 --max-bond 40
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time

import torch
from threadpoolctl import threadpool_limits  # installed with scikit-learn

from entangle.vib import HARTREE_TO_CM, HARTREE_TO_EV, PolynomialTT, vib_levels

H2CO_CM = [1193.5, 1265.1, 1532.4, 1861.6, 2867.2, 2925.7]


def h2co_like_force_field(seed: int = 0, cubic_cm: float = 40.0, quartic_cm: float = 8.0) -> PolynomialTT:
    """Quartic force field in dimensionless coordinates ``ξ_i = sqrt(ω_i) q_i`` (a.u.),

        V = Σ ω_i ξ_i²/2 + Σ_{i<=j<=k} φ_ijk ξ_i ξ_j ξ_k + Σ_i φ_iiii ξ_i⁴ + Σ_{i<j} φ_iijj ξ_i² ξ_j²,

    with couplings drawn uniformly from ``±cubic_cm`` (cubic) and ``[0, quartic_cm]`` cm^-1
    (quartic; ``φ_iijj`` at half that), so the quartic form is positive and V bounded below.
    Returned in eV (``norm = 27.211386``), like a trained NN-MPO.
    """
    gen = torch.Generator().manual_seed(seed)
    w = torch.tensor(H2CO_CM, dtype=torch.float64) / HARTREE_TO_CM  # Hartree
    f = len(H2CO_CM)
    terms = []

    def add(coef_cm: float, modes: tuple[int, ...]) -> None:
        powers = [0] * f
        coef = coef_cm / HARTREE_TO_CM
        for m in modes:
            powers[m] += 1
            coef *= float(w[m]) ** 0.5  # ξ_m = sqrt(ω_m) q_m
        terms.append((coef, tuple(powers)))

    for i in range(f):
        add(float(w[i]) * HARTREE_TO_CM / 2.0, (i, i))
    for i, j, k in itertools.combinations_with_replacement(range(f), 3):
        add(cubic_cm * (2.0 * float(torch.rand((), generator=gen, dtype=torch.float64)) - 1.0), (i, j, k))
    for i in range(f):
        add(quartic_cm * float(torch.rand((), generator=gen, dtype=torch.float64)), (i, i, i, i))
    for i, j in itertools.combinations(range(f), 2):
        add(0.5 * quartic_cm * float(torch.rand((), generator=gen, dtype=torch.float64)), (i, i, j, j))
    field = PolynomialTT.from_terms(terms)
    return PolynomialTT(field.cores, norm=HARTREE_TO_EV)  # energies in eV


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-states", type=int, default=20)
    parser.add_argument("--n-grid", type=int, default=9)
    parser.add_argument("--max-bond", type=int, default=40)
    parser.add_argument("--cutoff", type=float, default=1e-10)
    parser.add_argument("--n-sweeps", type=int, default=10)
    parser.add_argument("--tol", type=float, default=1e-10, help="DMRG energy convergence (Hartree)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # also the BLAS under scipy's ARPACK

    model = h2co_like_force_field(args.seed)
    common = dict(basis="ho", n_grid=args.n_grid, frequencies=H2CO_CM, energy_unit="eV", seed=args.seed)
    start, cpu = time.perf_counter(), time.process_time()
    exact = vib_levels(model, args.n_states, method="exact", **common)
    exact_wall, exact_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    dm = vib_levels(model, args.n_states, method="dmrg", max_bond=args.max_bond, cutoff=args.cutoff,
                    n_sweeps=args.n_sweeps, tol=args.tol, **common)
    dmrg_wall, dmrg_cpu = time.perf_counter() - start, time.process_time() - cpu
    diff = (dm.energies - exact.energies).abs() * HARTREE_TO_CM  # cm^-1
    h = dm.problem.hamiltonian
    out = {
        "system": "H2CO-like quartic force field, 6 modes, HO-DVR",
        "n_grid": args.n_grid, "grid_points": args.n_grid ** 6, "n_states": args.n_states,
        "potential_mpo_bonds": dm.problem.potential.bond_dims, "hamiltonian_mpo_bonds": h.bond_dims,
        "dmrg": {"max_bond": args.max_bond, "cutoff": args.cutoff, "tol_hartree": args.tol,
                 "levels_cm": [round(float(e), 6) for e in dm.levels_cm],
                 "zpe_cm": dm.zpe_cm, "converged": dm.dmrg.converged,
                 "sweeps": [sum(1 for r in dm.dmrg.history if r["state"] == k) for k in range(args.n_states)],
                 "max_truncation_error": max(r["truncation_error"] for r in dm.dmrg.history),
                 "max_offdiag_overlap": float((dm.dmrg.overlaps - torch.eye(args.n_states)).abs().max()),
                 "solve_seconds": dm.seconds, "wall_seconds": dmrg_wall, "cpu_seconds": dmrg_cpu},
        "exact": {"levels_cm": [round(float(e), 6) for e in exact.levels_cm], "zpe_cm": exact.zpe_cm,
                  "solve_seconds": exact.seconds, "wall_seconds": exact_wall, "cpu_seconds": exact_cpu},
        "abs_diff_cm": {"max": float(diff.max()), "mean": float(diff.mean()),
                        "per_state": [float(d) for d in diff]},
        "threads": args.threads, "torch": torch.__version__, "machine": platform.machine(),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

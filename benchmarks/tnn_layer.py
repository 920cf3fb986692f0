"""MPOLinear vs torch.nn.Linear: forward+backward time, parameters and GFLOP/s. Prints JSON.

Square layers of 1024 x 1024 and 4096 x 4096 (site dimensions 2, i.e. 10 and 12 MPO sites by
default) at batch 256, float32, bond dimensions 2, 4, 8, 16, 32, 64 (capped per bond at the
largest possible rank), side by side with a dense ``nn.Linear`` timed in the same run. The input
requires grad, so both layers compute ``dL/dx`` as they would inside a network.

Each entry is the median of ``--repeats`` timed forward+backward passes after one warm-up. FLOPs
are counted, not estimated from the dense size: the forward FLOPs are those of the contraction
plan :meth:`MPOLinear.forward_plan` selects (``dense``: merge ``W`` then one matmul;
``ltr[5, 5]``: merge blocks of 5 and 5 sites and sweep the batch through them), and every
matmul's backward costs two matmuls of the same size, so a forward+backward pass costs 3 x the
forward (6 b n_in n_out for ``nn.Linear``). Bias additions and copies are not counted.

Run: ``python benchmarks/tnn_layer.py [--threads 1] [--repeats 3] [--batch 256] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn

from entangle.models.tnn import MPOLinear

SIZES = (1024, 4096)
BONDS = (2, 4, 8, 16, 32, 64)


def _time(layer: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of ``layer(x).sum().backward()``."""
    def step():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).sum().backward()
        if x.is_cuda:
            torch.cuda.synchronize()

    step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--bonds", type=int, nargs="+", default=list(BONDS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    results = []
    for n in args.sizes:
        x = torch.randn(args.batch, n, generator=gen).to(args.device).requires_grad_(True)
        dense = nn.Linear(n, n).to(args.device)
        t_dense = _time(dense, x, args.repeats)
        flops_dense = 6 * args.batch * n * n
        for bond in args.bonds:
            layer = MPOLinear(n, n, bond_dim=bond, generator=gen).to(args.device)
            plan = layer.forward_plan(args.batch)
            fwd = plan.flops
            t_mpo = _time(layer, x, args.repeats)
            results.append({
                "size": n, "bond_dim": bond, "n_sites": layer.n_sites, "bond_dims": layer.bond_dims, "plan": plan.name,
                "params_mpo": layer.num_parameters(), "params_dense": sum(p.numel() for p in dense.parameters()),
                "param_ratio": layer.num_parameters() / sum(p.numel() for p in dense.parameters()),
                "ms_mpo": 1e3 * t_mpo, "ms_dense": 1e3 * t_dense, "time_ratio_mpo_over_dense": t_mpo / t_dense,
                "gflop_mpo": 3 * fwd / 1e9, "gflop_dense": flops_dense / 1e9,
                "gflops_mpo": 3 * fwd / t_mpo / 1e9, "gflops_dense": flops_dense / t_dense / 1e9,
            })
    print(json.dumps({"benchmark": "tnn_layer", "batch": args.batch, "dtype": "float32", "threads": args.threads,
                      "device": args.device, "torch": torch.__version__,
                      "machine": platform.processor() or platform.machine(),
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()

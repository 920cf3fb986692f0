"""Speed of entangle.so3.real_spherical_harmonics, side by side with e3nn (if installed).

Times, on one thread, for ``--n`` random float64 vectors at ``--l-max``:

* ``forward``: the harmonics;
* ``forward_backward``: plus the vector-Jacobian product with a dense random cotangent
  (what an energy model needs for forces);
* ``double_backward``: gradient of a loss on that VJP (what force training needs).

Each time is the best of ``--repeat`` runs, measured both as wall time and as process CPU time
(the latter is less sensitive to other jobs on a shared machine); the load average is printed so
that noisy numbers can be recognised. e3nn is a benchmark-only dependency
(``pip install e3nn``); without it only entangle is timed. As a check that both compute the
same functions (in different real bases), the rotation-invariant per-``l`` products
``Σ_m Y_lm(a) Y_lm(b)`` of both are compared with ``(2l+1)/(4π) P_l(a·b)``.

Usage: ``python benchmarks/so3_harmonics.py [--n 1000000] [--l-max 6] [--repeat 3]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from entangle.so3 import real_spherical_harmonics


def _best(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    wall, cpu = math.inf, math.inf
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return {"wall_s": round(wall, 4), "cpu_s": round(cpu, 4)}


def _timings(sh: Callable[[torch.Tensor], torch.Tensor], vectors: torch.Tensor,
             cotangent: torch.Tensor, repeat: int) -> dict[str, dict[str, float]]:
    def forward() -> None:
        with torch.no_grad():
            sh(vectors)

    def forward_backward() -> None:
        v = vectors.detach().requires_grad_()
        sh(v).backward(cotangent)

    def double_backward() -> None:
        v = vectors.detach().requires_grad_()
        (vjp,) = torch.autograd.grad(sh(v), v, cotangent, create_graph=True)
        vjp.square().sum().backward()

    return {"forward": _best(forward, repeat),
            "forward_backward": _best(forward_backward, repeat),
            "double_backward": _best(double_backward, max(1, repeat - 1))}


def _invariant_error(sh: Callable[[torch.Tensor], torch.Tensor], l_max: int) -> float:
    """max |Σ_m Y_lm(a) Y_lm(b) - (2l+1)/(4π) P_l(a·b)| over random pairs and all l."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 500, 3, generator=g, dtype=torch.float64)
    ya, yb = sh(a), sh(b)
    cos = (torch.nn.functional.normalize(a, dim=-1) * torch.nn.functional.normalize(b, dim=-1)
           ).sum(-1).numpy()
    error = 0.0
    for l in range(l_max + 1):
        block = slice(l * l, (l + 1) ** 2)
        product = (ya[:, block] * yb[:, block]).sum(-1).numpy()
        legendre = np.polynomial.legendre.Legendre.basis(l)(cos)
        error = max(error, float(np.abs(product - (2 * l + 1) / (4 * math.pi) * legendre).max()))
    return error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--l-max", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(args.n, 3, generator=g, dtype=torch.float64)  # [n, 3]
    cotangent = torch.randn(args.n, (args.l_max + 1) ** 2, generator=g, dtype=torch.float64)

    implementations: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "entangle": lambda v: real_spherical_harmonics(v, args.l_max),
    }
    e3nn_version = None
    try:
        import e3nn
        from e3nn import o3

        e3nn_version = e3nn.__version__
        implementations["e3nn"] = lambda v: o3.spherical_harmonics(
            list(range(args.l_max + 1)), v, normalize=True, normalization="integral")
    except ImportError:
        pass

    results = {}
    for name, sh in implementations.items():
        sh(vectors[:1000])  # warm-up (TorchScript compilation for e3nn)
        results[name] = _timings(sh, vectors, cotangent, args.repeat)
        results[name]["invariant_max_error"] = _invariant_error(sh, args.l_max)
    print(json.dumps({
        "benchmark": "real_spherical_harmonics",
        "n_vectors": args.n, "l_max": args.l_max, "dtype": "float64", "threads": 1,
        "repeat": args.repeat, "torch": torch.__version__, "e3nn": e3nn_version,
        "cpu": platform.processor() or platform.machine(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()

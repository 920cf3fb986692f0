"""Peer benchmark: Pompon (Hino & Kurashige's JAX NN-MPO library) on the H2CO data.

Run this file with a Python that can import ``pompon`` (a throw-away environment: Pompon is not
on the package index and is never vendored here); it must not and does not import ``entangle``.
``benchmarks/nnmpo_h2co.py --pompon-python PATH`` runs it as a subprocess next to our own run.

Usage::

    python benchmarks/pompon_peer.py --data DIR [--target-cm1 8.6] [--budget-minutes 25]
                                     [--threads 1]

Trains Pompon's H2CO schedule through its public API (``pompon.NNMPO``,
``pompon.optimizer.Adam``, ``pompon.optimizer.Sweeper``) on ``DIR/{x,y,f}_train.npy``, with
``DIR/{x,y,f}_validation.npy`` in the role of Pompon's monitoring set, and prints one JSON object:

* ``time_to_target_s``: wall seconds from the start of training until the validation energy MAE
  first reaches ``--target-cm1`` (checked after every Adam / sweep call of the schedule, the
  checks included in the time), or null if the budget ran out first;
* ``validation``: energy MAE / RMSE (cm⁻¹) of the model when training stopped;
* ``eval_us_per_point``: energy + forces for 10,000 points, the two public calls
  ``model.forward(x)`` and ``model.force(x)`` (forces by ``jax.vmap(jax.jacrev(...))`` as Pompon
  computes them) wrapped in one ``jax.jit``, median of 5 after a warm-up, for an NN-MPO of the
  shape ``--eval-bond-dims`` (default: ours, [5, 14, 14, 14, 6]; random cores, since the time
  depends on the shape only); ``eval_api_us_per_point``: the same two calls without the outer
  ``jax.jit``; ``eval_trained_us_per_point``: jitted, for the model as trained (``bond_dims``).

The schedule is the one of Pompon's ``docs/notebook/_h2co_opt.py`` (N = 21, f = 6, bond 2 growing
to 14, moderate+silu basis, force weight 1), stopped at the target or the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

EV_TO_CM1 = 8065.544


def _set_threads(threads: int) -> None:
    """Limit XLA's CPU thread pools (must run before jax is imported)."""
    os.environ.setdefault(
        "XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}"
    )
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    os.environ.setdefault("TQDM_DISABLE", "1")  # Pompon draws progress bars on every call


class _Stop(Exception):
    """Raised by the monitor to leave the schedule."""


class Monitor:
    """Validation energy MAE after each schedule call; stops at the target or the budget."""

    def __init__(self, model, x_val, y_val, y_scale, target_cm1, budget_s):
        self.model, self.x_val, self.y_val = model, x_val, y_val
        self.y_scale, self.target, self.budget = y_scale, target_cm1, budget_s
        self.start = time.perf_counter()
        self.time_to_target = None
        self.history: list[dict] = []
        self.mae = self.rmse = float("nan")

    def __call__(self, stage: str) -> None:
        import numpy as np

        err = (np.asarray(self.model.forward(self.x_val)) - self.y_val).ravel() * self.y_scale * EV_TO_CM1
        self.mae, self.rmse = float(np.abs(err).mean()), float(np.sqrt((err**2).mean()))
        elapsed = time.perf_counter() - self.start
        self.history.append({"time_s": round(elapsed, 2), "stage": stage, "val_mae_cm1": round(self.mae, 3),
                             "bond_dim": int(self.model.bond_dim)})
        print(f"[pompon] {elapsed:8.1f} s  {stage:<12} val MAE {self.mae:9.3f} cm-1  "
              f"M={self.model.bond_dim}", file=sys.stderr, flush=True)
        if self.time_to_target is None and self.mae <= self.target:
            self.time_to_target = elapsed
            raise _Stop
        if elapsed >= self.budget:
            raise _Stop


def run_schedule(optimizer, sweeper, check) -> None:
    """Pompon's docs/notebook/_h2co_opt.py schedule (the ``restart = False`` branch)."""
    import numpy as np
    import optax

    for i in range(100):  # Adam on U, w, b + one one-dot sweep, bond dimension 2
        lr = 1.0e-03 if i < 50 else 1.0e-04
        optimizer.lr = lr
        optimizer.optimize(epochs=10, epoch_per_log=10)
        check(f"adam {i}")
        sweeper.sweep(nsweeps=1, opt_tol=1.0e-10, opt_maxiter=50, opt_batchsize=625,
                      optax_solver=optax.adam(lr), onedot=True)
        check(f"sweep {i}")
    cutoffs = np.logspace(np.log10(1.0e-02), np.log10(1.0e-03), 15)
    for i in range(15):  # two-dot sweeps growing the bonds to 14, then 500 Adam epochs
        optimizer.lr = 1.0e-04
        sweeper.sweep(nsweeps=10, opt_tol=1.0e-10, opt_maxiter=200, opt_batchsize=625, cutoff=cutoffs[i],
                      optax_solver=optax.adam(1.0e-04), auto_onedot=True, maxdim=14)
        check(f"grow {i}")
        optimizer.optimize(epochs=500, epoch_per_log=100)
        check(f"adam500 {i}")
    optimizer.lr = 1.0e-05
    for i in range(15, 30):  # one-dot refinement
        sweeper.sweep(nsweeps=10, opt_tol=1.0e-12, opt_maxiter=500, opt_batchsize=625,
                      optax_solver=optax.adam(1.0e-05), onedot=True)
        check(f"sweep10 {i}")
        optimizer.optimize(epochs=500, epoch_per_log=100)
        check(f"adam500 {i}")
    sweeper.sweep(nsweeps=500, opt_tol=1.0e-13, opt_maxiter=100000, opt_batchsize=625, use_CG=True, onedot=True)
    check("cg")


def eval_speed(model, x_pool, batch: int = 10_000, repeats: int = 5, seed: int = 0) -> tuple[float, float]:
    """Median µs per point of energy + forces on ``batch`` points near the data: (jitted, plain API)."""
    import jax
    import numpy as np

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x_pool.shape[0], size=batch)
    x = jax.numpy.asarray(x_pool[idx] + 0.1 * np.std(x_pool) * rng.standard_normal((batch, x_pool.shape[1])))

    def api(x):
        return model.forward(x), model.force(x)

    result = []
    for fn in (jax.jit(api), api):
        jax.block_until_ready(fn(x))  # warm-up (compilation)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(x))
            times.append(time.perf_counter() - t0)
        result.append(float(np.median(times) / batch * 1e6))
    return result[0], result[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="directory with {x,y,f}_{train,validation}.npy")
    parser.add_argument("--target-cm1", type=float, default=8.6)
    parser.add_argument("--budget-minutes", type=float, default=25.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-bond-dims", default="5,14,14,14,6", help="TT shape timed for eval_us_per_point")
    args = parser.parse_args()
    _set_threads(args.threads)
    try:
        import jax
        import numpy as np
        import pompon
        from pompon.optimizer import Adam, Sweeper
    except ImportError as exc:
        sys.exit(f"pompon_peer.py: cannot import Pompon or its dependencies ({exc}); run this script with "
                 "the python of an environment where `import pompon` works")
    import logging

    logging.getLogger("pompon").setLevel(logging.WARNING)

    load = {f"{k}_{s}": np.load(args.data / f"{k}_{s}.npy") for k in "xyf" for s in ("train", "validation")}
    x_scale, y_scale = float(load["x_train"].std()), float(load["y_train"].std())
    x_tr, x_val = load["x_train"] / x_scale, load["x_validation"] / x_scale
    y_tr, y_val = load["y_train"] / y_scale, load["y_validation"] / y_scale
    f_tr = load["f_train"] / (y_scale / x_scale)

    n, f, basis = x_tr.shape[1], x_tr.shape[1], 21  # as in _h2co_opt.py
    x0 = x_tr[np.random.default_rng(0).choice(len(x_tr), basis - 1)]
    model = pompon.NNMPO(input_size=n, hidden_size=f, basis_size=basis, bond_dim=2, activation="moderate+silu",
                         b_scale=0.0, w_scale=1.0, b_dist="uniform", w_dist="uniform", x0=x0,
                         key=jax.random.key(3), fix_bias=False, random_tt=True)
    with tempfile.TemporaryDirectory(prefix="pompon_peer_") as outdir:
        optimizer = Adam(lr=1.0e-03).setup(model=model, x_train=x_tr, y_train=y_tr, f_train=f_tr, batch_size=125,
                                           x_test=x_val, y_test=y_val, outdir=outdir)
        sweeper = Sweeper(optimizer)
        monitor = Monitor(model, x_val, y_val, y_scale, args.target_cm1, 60.0 * args.budget_minutes)
        try:
            run_schedule(optimizer, sweeper, monitor)
        except _Stop:
            pass
    train_s = time.perf_counter() - monitor.start
    model.rescale(x_scale, y_scale)  # raw units (√mₑ·a₀, eV) for the timing, as Pompon exports models
    eval_trained, _ = eval_speed(model, load["x_validation"])
    ranks = [1] + [int(m) for m in args.eval_bond_dims.split(",")] + [1]
    keys = jax.random.split(jax.random.key(0), f)
    cores = [jax.random.normal(keys[i], (ranks[i], basis, ranks[i + 1]), dtype=pompon.DTYPE) for i in range(f)]
    shaped = pompon.NNMPO(input_size=n, hidden_size=f, basis_size=basis, bond_dim=max(ranks),
                          activation="moderate+silu", x0=load["x_train"][:basis - 1])
    shaped.tt = pompon.TensorTrain.set_custom(cores)
    eval_jit, eval_api = eval_speed(shaped, load["x_validation"])
    print(json.dumps({
        "time_to_target_s": monitor.time_to_target,
        "target_cm1": args.target_cm1,
        "budget_minutes": args.budget_minutes,
        "train_wall_s": round(train_s, 1),
        "validation": {"energy_mae_cm1": monitor.mae, "energy_rmse_cm1": monitor.rmse},
        "bond_dims": [int(r) for r in model.tt.ranks],
        "eval_us_per_point": eval_jit,
        "eval_api_us_per_point": eval_api,
        "eval_bond_dims": ranks[1:-1],
        "eval_trained_us_per_point": eval_trained,
        "stages_done": len(monitor.history),
        "history": monitor.history,
        "versions": {"pompon": pompon.__version__, "jax": jax.__version__, "python": platform.python_version()},
        "threads": args.threads,
        "env": {k: os.environ.get(k) for k in ("XLA_FLAGS", "OMP_NUM_THREADS")},
    }, indent=2))


if __name__ == "__main__":
    main()

"""NN-MPO on H2CO (Hino & Kurashige 2024): training time to accuracy, final errors, evaluation speed.

Usage::

    PYTHONPATH=src python benchmarks/nnmpo_h2co.py [--config examples/h2co_nnmpo.yaml] [--out DIR]
                                                    [--threads 1] [--restarts N] [--max-minutes M]
                                                    [--eval-only MODEL_DIR]
                                                    [--pompon-python PATH [--pompon-minutes 40]]

Prints one JSON object:

* ``time_to_8p6_cm1_s``: wall seconds of training until the validation energy MAE first reaches
  8.6 cm⁻¹ (the light Pompon recipe's result, ~13 min on the reference's CPU), or null;
* ``validation`` / ``train``: final errors of the selected model (cm⁻¹, eV/(√mₑ·a₀));
* ``eval_us_per_point``: batched energy + analytic force evaluation in batches of 10,000 points
  (Pompon reports ~21 µs/point for its JAX implementation);
* ``num_parameters``, ``bond_dims``, ``wall_s``.

With ``--pompon-python PATH`` (a Python that can import Pompon, e.g. a throw-away virtual
environment), the same invocation then runs ``benchmarks/pompon_peer.py`` with it, on the same
data, target and thread count, and adds a ``pompon`` block (that script's JSON without its
per-stage history) and the ratios ``time_to_8p6_ratio`` (ours / Pompon's) and ``eval_ratio``
(ours / Pompon's µs per point at the same tensor-train shape).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from entangle import io
from entangle.train.nnmpo_trainer import fit_h2co, load_h2co_arrays, resolve_data_dir

REPO = Path(__file__).resolve().parents[1]


def eval_speed(model, x_pool: np.ndarray, batch: int = 10_000, repeats: int = 5, seed: int = 0) -> float:
    """Median µs per point of ``energy_and_forces`` on batches of ``batch`` points near the data."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x_pool.shape[0], size=batch)
    x = x_pool[idx] + 0.1 * np.std(x_pool) * rng.standard_normal((batch, x_pool.shape[1]))
    xt = torch.as_tensor(x, dtype=model.U.dtype)
    times = []
    with torch.no_grad():
        model.energy_and_forces(xt)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.energy_and_forces(xt)
            times.append(time.perf_counter() - t0)
    return float(np.median(times) / batch * 1e6)


def run_pompon(python: str, data_dir: Path, target_cm1: float, minutes: float, threads: int) -> dict:
    """Run ``pompon_peer.py`` with ``python`` and return its JSON (progress lines go to stderr)."""
    cmd = [python, str(REPO / "benchmarks" / "pompon_peer.py"), "--data", str(data_dir), "--target-cm1",
           str(target_cm1), "--budget-minutes", str(minutes), "--threads", str(threads)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    peer = json.loads(proc.stdout)
    history = peer.pop("history", [])
    peer["last_stage"] = history[-1] if history else None
    return peer


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return None if ours is None or not theirs else ours / theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "examples" / "h2co_nnmpo.yaml")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=None, help="override train.max_minutes")
    parser.add_argument("--restarts", type=int, default=None,
                        help="override train.restarts (1: a single start, like the peer's one run)")
    parser.add_argument("--eval-only", type=Path, default=None, help="time an already trained model directory")
    parser.add_argument("--pompon-python", default=None, help="python that can import pompon: run the peer too")
    parser.add_argument("--pompon-minutes", type=float, default=40.0, help="wall budget of the Pompon run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(args.config.read_text())
    config.pop("task", None)  # as `entangle fit` does: the task picks fit_h2co
    config["config_dir"] = str(args.config.resolve().parent)
    config.setdefault("train", {})["threads"] = args.threads
    config["train"].setdefault("target_mae_cm1", 8.6)
    if args.max_minutes is not None:
        config["train"]["max_minutes"] = args.max_minutes
    if args.restarts is not None:
        config["train"]["restarts"] = args.restarts
    result: dict = {"threads": args.threads, "restarts": config["train"].get("restarts", 1)}
    if args.eval_only is None:
        out = args.out or Path(tempfile.mkdtemp(prefix="nnmpo_h2co_"))
        metrics = fit_h2co(config, out)
        result.update({
            "time_to_8p6_cm1_s": metrics["time_to_target_s"],
            "validation": {k: metrics[k] for k in ("energy_mae_cm1", "energy_rmse_cm1", "energy_max_cm1",
                                                   "force_rmse", "force_mae")},
            "train": metrics["train"],
            "num_parameters": metrics["num_parameters"],
            "bond_dims": metrics["bond_dims"],
            "wall_s": metrics["wall_s"],
            "model_dir": str(out),
        })
        model_dir = out
    else:
        model_dir = args.eval_only
    model = io.load(model_dir)
    data_dir = resolve_data_dir(config["data"], config["config_dir"])
    x_val = load_h2co_arrays(data_dir)["validation"][0]
    result["eval_us_per_point"] = eval_speed(model, x_val)
    result["pompon_eval_us_per_point_reported"] = 21.0
    if args.pompon_python is not None:
        print(json.dumps(result, indent=2), file=sys.stderr, flush=True)  # ours, in case the peer fails
        peer = run_pompon(args.pompon_python, data_dir, float(config["train"]["target_mae_cm1"]),
                          args.pompon_minutes, args.threads)
        result["pompon"] = peer
        result["time_to_8p6_ratio"] = _ratio(result.get("time_to_8p6_cm1_s"), peer["time_to_target_s"])
        result["eval_ratio"] = _ratio(result["eval_us_per_point"], peer["eval_us_per_point"])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""NN-MPO on H2CO (Hino & Kurashige 2024): training time to accuracy, final errors, evaluation speed.

Usage::

    PYTHONPATH=src python benchmarks/nnmpo_h2co.py [--config examples/h2co_nnmpo.yaml] [--out DIR]
                                                    [--threads 1] [--eval-only MODEL_DIR]

Prints one JSON object:

* ``time_to_8p6_cm1_s``: wall seconds of training until the validation energy MAE first reaches
  8.6 cm⁻¹ (the light Pompon recipe's result, ~13 min on the reference's CPU), or null;
* ``validation`` / ``train``: final errors of the selected model (cm⁻¹, eV/(√mₑ·a₀));
* ``eval_us_per_point``: batched energy + analytic force evaluation in batches of 10,000 points
  (Pompon reports ~21 µs/point for its JAX implementation);
* ``num_parameters``, ``bond_dims``, ``wall_s``.
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "examples" / "h2co_nnmpo.yaml")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=None, help="override train.max_minutes")
    parser.add_argument("--eval-only", type=Path, default=None, help="time an already trained model directory")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(args.config.read_text())
    config.pop("task", None)  # as `entangle fit` does: the task picks fit_h2co
    config["config_dir"] = str(args.config.resolve().parent)
    config.setdefault("train", {})["threads"] = args.threads
    config["train"].setdefault("target_mae_cm1", 8.6)
    if args.max_minutes is not None:
        config["train"]["max_minutes"] = args.max_minutes
    result: dict = {"threads": args.threads}
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
    x_val = load_h2co_arrays(resolve_data_dir(config["data"], config["config_dir"]))["validation"][0]
    result["eval_us_per_point"] = eval_speed(model, x_val)
    result["pompon_eval_us_per_point_reported"] = 21.0
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

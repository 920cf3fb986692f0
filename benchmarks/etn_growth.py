"""Hyperparameter growth (Hodapp & Shapeev Sec. 6.1) on a seeded subset of QM7, from random
starts (the paper) or warm starts (every candidate grown from the best fit of the current step).

Runs ``examples/qm7_etn_grow.yaml`` on ``--n-train`` / ``--n-valid`` molecules drawn with seed
0 from the 7,101, with ``--steps`` L-BFGS iterations per fit, and prints JSON: the visited
hyperparameters with their parameter counts and mean validation losses (eq. 48), the final
model's validation energy MAE / RMSE (meV/atom) and the wall time.
``pareto.json`` / ``pareto.png`` and the final model are written to ``--out``.

Usage: python benchmarks/etn_growth.py [--warm] [--n-train 1000] [--n-valid 250] [--steps 100]
       [--iterations 6] [--restarts 2] [--out runs/etn_growth/cold]
Run the cold and warm variants as two processes, one thread each, to compare them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import yaml

from entangle.data import load
from entangle.train.hyper import grow_etn

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "qm7_etn_grow.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm", action="store_true", help="warm starts (default: the paper's)")
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-valid", type=int, default=250)
    parser.add_argument("--steps", type=int, default=100, help="L-BFGS iterations per fit")
    parser.add_argument("--iterations", type=int, default=6, help="growth steps [S3]-[S5]")
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/etn_growth/cold"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(EXAMPLE.read_text())
    data = load(config["data"]["train"])
    subset, _ = data.split([args.n_train + args.n_valid, len(data) - args.n_train - args.n_valid],
                           seed=0)
    config["data"] = {"train": subset, "valid_size": args.n_valid, "seed": 0}
    config["train"].update(max_steps=args.steps, patience=args.steps)
    config["grow"].update(iterations=args.iterations, restarts=args.restarts,
                          warm_start=args.warm)
    began = time.time()
    metrics = grow_etn(config, args.out, progress=False)
    valid = metrics["valid"]
    print(json.dumps({
        "warm_start": args.warm, "n_train": metrics["n_train"], "n_valid": metrics["n_valid"],
        "lbfgs_steps_per_fit": args.steps, "restarts": args.restarts,
        "path": [{"hyper": p["hyper"], "n_parameters": p["n_parameters"],
                  "mean_valid_loss": p["mean_valid_loss"], "valid_losses": p["valid_losses"]}
                 for p in metrics["path"]],
        "final_hyperparameters": metrics["hyperparameters"],
        "final_valid_energy_mae_mev_per_atom": valid["energy_mae_mev_per_atom"],
        "final_valid_energy_rmse_mev_per_atom": valid["energy_rmse_mev_per_atom"],
        "wall_time_s": time.time() - began, "threads": args.threads,
        "load_average": os.getloadavg(),
    }, indent=1))


if __name__ == "__main__":
    main()

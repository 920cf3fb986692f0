"""Time to reach the spiral target (test accuracy >= 0.95): DMRG-like sweeps vs Adam. Prints JSON.

Model of Table II of Jahromi & Orús (frozen Dense 64 -> TN 64/6 ReLU -> Dense 3 softmax, bond
dimension 8), spiral data of :func:`entangle.experiments.tnn_demo.spiral_data` (600 train /
600 test), float32, one thread. For each seed:

* sweeps: :class:`~entangle.train.sweeper.DMRGSweeper` with the settings of the demo
  (:data:`entangle.experiments.tnn_demo.SETTINGS` ["spiral"]: PaL, plain LGD α = 0.1 on the bond
  tensors, Adam 0.01 on the dense parameters), test accuracy checked after every sweep;
* Adam: :func:`~entangle.train.sweeper.train_adam` on all parameters (cores at fixed bond
  dimension 8), full batch, ``--adam-lr``, test accuracy checked every 10 epochs.

Times are wall-clock seconds until the first check at or above the target, including the
checks themselves (the sweeper also records Schmidt spectra every sweep). ``passes`` counts
forward+backward passes through the network (one per bond update or per Adam step).

Run: ``python benchmarks/tnn_training.py [--seeds 0 1 2] [--adam-lr 0.01]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict

import torch

from entangle.experiments.tnn_demo import SETTINGS, as_tensors, cross_entropy, spiral_data, table_model
from entangle.train.sweeper import DMRGSweeper, train_adam

TARGET = 0.95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--adam-lr", type=float, default=0.01)
    parser.add_argument("--max-sweeps", type=int, default=1000)
    parser.add_argument("--max-epochs", type=int, default=20000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # the first optimiser imports torch._dynamo: not timed
    s = SETTINGS["spiral"]
    runs = []
    for seed in args.seeds:
        x, y, xt, yt = as_tensors(s.dtype, *spiral_data(seed), labels=(1, 3))
        row = {"seed": seed}

        model = table_model("spiral", seed)
        sweeper = DMRGSweeper(model, cross_entropy, lr=s.lr, max_bond=s.max_bond, strategy=s.strategy,
                              local_step=s.local_step, dense_optimizer=s.dense_optimizer, dense_lr=s.dense_lr,
                              lr_schedule=s.lr_schedule, metric="accuracy", seed=seed,
                              callback=lambda r: r["val_metric"] >= TARGET)
        start = time.perf_counter()
        history = sweeper.fit(x, y, n_sweeps=args.max_sweeps, x_val=xt, y_val=yt)
        row["sweeps_s"] = time.perf_counter() - start
        row["sweeps"] = len(history)
        row["sweeps_passes"] = sum(r["n_updates"] for r in history)
        row["sweeps_reached"] = history[-1]["val_metric"] >= TARGET
        row["sweeps_accuracy"] = history[-1]["val_metric"]

        model = table_model("spiral", seed)
        start = time.perf_counter()
        history = train_adam(model, cross_entropy, x, y, lr=args.adam_lr, epochs=args.max_epochs, metric="accuracy",
                             x_val=xt, y_val=yt, record_every=10, callback=lambda r: r["val_metric"] >= TARGET)
        row["adam_s"] = time.perf_counter() - start
        row["adam_epochs"] = history[-1]["epoch"]
        row["adam_passes"] = history[-1]["epoch"]
        row["adam_reached"] = history[-1]["val_metric"] >= TARGET
        row["adam_accuracy"] = history[-1]["val_metric"]
        runs.append(row)

    summary = {key: statistics.median(r[key] for r in runs) for key in ("sweeps_s", "adam_s", "sweeps", "adam_epochs")}
    summary["time_ratio_sweeps_over_adam"] = summary["sweeps_s"] / summary["adam_s"]
    print(json.dumps({"benchmark": "tnn_training", "target_test_accuracy": TARGET, "dtype": s.dtype, "threads": 1,
                      "sweep_settings": asdict(s), "adam_lr": args.adam_lr,
                      "median": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()

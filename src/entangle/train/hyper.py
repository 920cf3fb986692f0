"""Greedy growth of ETN hyperparameters (Hodapp & Shapeev Sec. 6.1, steps [S1]–[S5]).

Starting from a pair potential ``H = {N_rad=5, d=1, L=1, 1, 1, 1}`` ([S1]), every iteration
trains each one-step enlargement ``H + Δ_i H`` ``n_restarts`` times from different random
initialisations, takes the mean validation loss (eq. 48) ([S2]–[S3]), scores each by the
stochastic gradient of eq. (49)

    ∇_i = -(log L̄(H + Δ_i H) - log L̄(H)) / (log #θ(H + Δ_i H) - log #θ(H)),

([S4]) and moves to the best one ([S5]). The visited models trace the validation-loss vs.
number-of-parameters curve, written as JSON and PNG.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from entangle import io
from entangle.data.atoms import Structure
from entangle.models.etn import ETNConfig, ETNPotential
from entangle.train.trainer import TrainConfig, Trainer

__all__ = ["HYPER_NAMES", "mean_validation_loss", "grow_hyperparameters"]

HYPER_NAMES = ("n_rad", "d", "L", "spec_rank", "rad_rank", "ett_rank")


def mean_validation_loss(hyper: Sequence[int], train: Sequence[Structure],
                         valid: Sequence[Structure], base: dict[str, Any],
                         train_config: TrainConfig, n_restarts: int
                         ) -> tuple[float, list[float], int]:
    """Mean (eq. 48), all validation losses and the parameter count of hyperparameters ``H``."""
    losses, n_params = [], 0
    for restart in range(n_restarts):
        cfg = ETNConfig(**base, **dict(zip(HYPER_NAMES, hyper)), seed=restart)
        model = ETNPotential(cfg)
        trainer = Trainer(model, train, valid, dataclasses.replace(train_config, progress=False))
        trainer.fit()
        losses.append(trainer.best_loss)
        n_params = model.n_parameters()
    return float(np.mean(losses)), losses, n_params


def grow_hyperparameters(train: Sequence[Structure], valid: Sequence[Structure],
                         base: dict[str, Any], train_config: TrainConfig, *,
                         n_iterations: int = 5, n_restarts: int = 3,
                         start: Sequence[int] = (5, 1, 1, 1, 1, 1),
                         out_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Run [S1]–[S5] for ``n_iterations`` steps; returns one record per visited ``H``.

    ``base`` holds the ETNConfig fields other than the six hyperparameters (species,
    reference_energies, r_cut, ...). With ``out_dir``, ``pareto.json`` and ``pareto.png``
    (validation loss vs. parameters, min/max over restarts as bars) are written there.
    """
    hyper = list(start)
    mean, losses, n_params = mean_validation_loss(hyper, train, valid, base, train_config,
                                                  n_restarts)
    path = [{"hyper": list(hyper), "mean_valid_loss": mean, "valid_losses": losses,
             "n_parameters": n_params}]
    for _ in range(n_iterations):
        candidates = []
        for i in range(len(HYPER_NAMES)):
            trial = list(hyper)
            trial[i] += 1
            m, ls, n = mean_validation_loss(trial, train, valid, base, train_config, n_restarts)
            grad = -(math.log(m) - math.log(mean)) / (math.log(n) - math.log(n_params)) \
                if n != n_params else -math.inf
            candidates.append({"hyper": trial, "mean_valid_loss": m, "valid_losses": ls,
                               "n_parameters": n, "gradient": grad})
        best = max(candidates, key=lambda c: c["gradient"])
        hyper, mean, n_params = best["hyper"], best["mean_valid_loss"], best["n_parameters"]
        path.append({**best, "candidates": candidates})
    if out_dir is not None:
        _write(path, Path(out_dir))
    return path


def _write(path: list[dict[str, Any]], out_dir: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    io.atomic_write_text(out_dir / "pareto.json", json.dumps(path, indent=2))
    n = [p["n_parameters"] for p in path]
    mean = [p["mean_valid_loss"] for p in path]
    low = [mean[k] - min(p["valid_losses"]) for k, p in enumerate(path)]
    high = [max(p["valid_losses"]) - mean[k] for k, p in enumerate(path)]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(n, mean, yerr=[low, high], marker="o", capsize=3)
    for p, x, y in zip(path, n, mean):
        ax.annotate("{" + ",".join(map(str, p["hyper"])) + "}", (x, y), fontsize=6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of parameters")
    ax.set_ylabel("mean validation loss (eq. 48)")
    fig.tight_layout()
    fig.savefig(out_dir / "pareto.png", dpi=120)
    plt.close(fig)

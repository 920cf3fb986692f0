"""Greedy growth of ETN hyperparameters (Hodapp & Shapeev Sec. 6.1, steps [S1]–[S5]).

Starting from a pair potential ``H = {N_rad=5, d=1, L=1, 1, 1, 1}`` ([S1]), every iteration
trains each one-step enlargement ``H + Δ_i H`` ``n_restarts`` times from different random
initialisations, takes the mean validation loss (eq. 48) ([S2]–[S3]), scores each by the
stochastic gradient of eq. (49)

    ∇_i = -(log L̄(H + Δ_i H) - log L̄(H)) / (log #θ(H + Δ_i H) - log #θ(H)),

([S4]) and moves to the best one ([S5]). The visited models trace the validation-loss vs.
number-of-parameters curve, written as JSON and PNG. ``warm_start`` (not in the paper) trains
every candidate from the best model of ``H`` grown into it (:meth:`ETNPotential.embed`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from entangle import io
from entangle.data.atoms import Structure
from entangle.errors import ConfigError, check_keys
from entangle.models.etn import ETNConfig, ETNPotential
from entangle.train.trainer import TrainConfig, Trainer, etn_setup, evaluate_structures

__all__ = ["HYPER_NAMES", "mean_validation_loss", "grow_hyperparameters", "grow_etn"]

HYPER_NAMES = ("n_rad", "d", "L", "spec_rank", "rad_rank", "ett_rank")


def mean_validation_loss(hyper: Sequence[int], train: Sequence[Structure],
                         valid: Sequence[Structure], base: dict[str, Any],
                         train_config: TrainConfig, n_restarts: int,
                         start_from: ETNPotential | None = None,
                         on_fit: Callable[[], Any] | None = None
                         ) -> tuple[float, list[float], int, ETNPotential]:
    """Mean validation loss (eq. 48) of hyperparameters ``H`` over ``n_restarts`` fits.

    Restart ``i`` starts from seed ``i``; with ``start_from`` every restart starts from that
    trained model embedded (:meth:`ETNPotential.embed`), and the seed only sets the new
    coefficients. ``on_fit()`` is called after every fit. Returns the mean, the validation
    losses, the parameter count and the fitted model with the lowest validation loss.
    """
    losses, best = [], None
    for restart in range(n_restarts):
        model = ETNPotential(ETNConfig(**base, **dict(zip(HYPER_NAMES, hyper)), seed=restart))
        trainer = Trainer(model, train, valid, dataclasses.replace(train_config, progress=False),
                          start_from=start_from)
        trainer.fit()
        losses.append(trainer.best_loss)
        if trainer.best_loss <= min(losses):
            best = model
        if on_fit is not None:
            on_fit()
    return float(np.mean(losses)), losses, best.n_parameters(), best


def grow_hyperparameters(train: Sequence[Structure], valid: Sequence[Structure],
                         base: dict[str, Any], train_config: TrainConfig, *,
                         n_iterations: int = 5, n_restarts: int = 3,
                         start: Sequence[int] = (5, 1, 1, 1, 1, 1), warm_start: bool = False,
                         out_dir: str | Path | None = None, progress: bool = False
                         ) -> tuple[list[dict[str, Any]], ETNPotential]:
    """Run [S1]–[S5] for ``n_iterations`` steps.

    ``base`` holds the ETNConfig fields other than the six hyperparameters and the seed
    (species, reference_energies, r_cut, ...). ``warm_start=False`` is the paper's algorithm:
    every fit starts from random coefficients. With ``warm_start=True`` the candidates
    ``H + Δ_i H`` start from the best fit of ``H`` grown into them (every direction, ``d``
    included, can hold the smaller model exactly), so each step refines the model it
    came from instead of starting over. A warm candidate also gains from the extra training
    alone, which would favour the cheapest step, so eq. (49) then compares it with ``H``
    trained on from the same start for as long (``baseline`` in the step's record); the
    restarts differ only in the small random start of the new coefficients and end close
    together, so one restart is usually enough. With ``out_dir``, ``pareto.json`` and
    ``pareto.png`` (validation loss vs. parameters, min/max over restarts as bars) are written
    there, after every step.

    Returns one record per visited ``H`` (``hyper``, ``mean_valid_loss``, ``valid_losses``,
    ``n_parameters``, ``wall_time_s`` and, after [S1], ``gradient`` (eq. 49), all
    ``candidates`` and with warm starts the ``baseline``) and the best fitted model of the
    last ``H``.
    """
    if n_iterations < 0 or n_restarts < 1:
        raise ConfigError(f"need n_iterations >= 0 and n_restarts >= 1, got {n_iterations} "
                          f"and {n_restarts}")
    if len(start) != len(HYPER_NAMES) or min(start) < 1:
        raise ConfigError(f"start needs six positive integers {HYPER_NAMES}, got {list(start)}")
    n_fits = n_restarts * (1 + (len(HYPER_NAMES) + warm_start) * n_iterations)
    with tqdm(total=n_fits, desc="hyperparameter growth", unit="fit",
              disable=not progress) as bar:
        def fit(hyper: Sequence[int], start_from: ETNPotential | None
                ) -> tuple[dict[str, Any], ETNPotential]:
            began = time.time()
            mean, losses, n, model = mean_validation_loss(
                hyper, train, valid, base, train_config, n_restarts, start_from, bar.update)
            return {"hyper": list(hyper), "mean_valid_loss": mean, "valid_losses": losses,
                    "n_parameters": n, "wall_time_s": time.time() - began}, model

        current, model = fit(start, None)
        path = [current]
        for _ in range(n_iterations):
            baseline = current
            if warm_start:  # the gain of training on, without a new coefficient
                baseline, _ = fit(current["hyper"], model)
            candidates, models = [], []
            for i in range(len(HYPER_NAMES)):
                trial = list(current["hyper"])
                trial[i] += 1
                record, fitted = fit(trial, model if warm_start else None)
                n, n0 = record["n_parameters"], current["n_parameters"]
                record["gradient"] = -(math.log(record["mean_valid_loss"])  # eq. (49)
                                       - math.log(baseline["mean_valid_loss"])) \
                    / (math.log(n) - math.log(n0)) if n != n0 else -math.inf
                candidates.append(record)
                models.append(fitted)
            k = max(range(len(candidates)), key=lambda j: candidates[j]["gradient"])
            current, model = candidates[k], models[k]
            path.append({**current, "candidates": candidates,
                         **({"baseline": baseline} if warm_start else {})})
            bar.set_postfix(H="{" + ",".join(map(str, current["hyper"])) + "}",
                            loss=f"{current['mean_valid_loss']:.4g}")
            if out_dir is not None:
                _write(path, Path(out_dir))
    if out_dir is not None:
        _write(path, Path(out_dir))
    return path, model


def grow_etn(config: dict[str, Any], out_dir: str | Path, *, progress: bool = True
             ) -> dict[str, Any]:
    """The hyperparameter growth of Sec. 6.1 from a config (``entangle fit``, ``task:
    etn_grow``); writes ``pareto.json``, ``pareto.png``, the best model of the last step
    (``model.safetensors``/``.json``) and ``metrics.json`` to ``out_dir``.

    The config is an ETN fit config (:func:`entangle.train.trainer.fit_etn`) whose ``model``
    section leaves out the six hyperparameters and the seed, with a ``grow`` section::

        grow: {iterations: 5, restarts: 3, start: [5, 1, 1, 1, 1, 1], warm_start: false}

    Every candidate is trained with the ``train`` section (e.g. ``max_steps`` L-BFGS
    iterations, as the paper's 1,000 BFGS iterations); ``init`` and ``resume`` do not apply.
    Returns the metrics: the visited path (without the candidates), the final
    hyperparameters and the final model's validation and test errors.
    """
    began = time.time()
    grow = dict(config.get("grow") or {})
    check_keys(grow, {"iterations", "restarts", "start", "warm_start"}, "config.grow")
    fixed = sorted(set(config.get("model") or {}) & (set(HYPER_NAMES) | {"seed"}))
    if fixed:
        raise ConfigError(f"config.model must leave out {fixed}: growth sets the six "
                          "hyperparameters (grow.start) and the seeds (the restarts)")
    if config.get("init") is not None or (config.get("train") or {}).get("resume"):
        raise ConfigError("init and train.resume do not apply to hyperparameter growth")
    setup = etn_setup(config, progress=False, task="etn_grow", extra_keys=frozenset({"grow"}))
    base = {k: v for k, v in setup.model.items() if k != "seed"}
    out_dir = Path(out_dir)
    path, model = grow_hyperparameters(
        setup.train, setup.valid, base, setup.train_config,
        n_iterations=int(grow.get("iterations", 5)), n_restarts=int(grow.get("restarts", 3)),
        start=[int(h) for h in grow.get("start", (5, 1, 1, 1, 1, 1))],
        warm_start=bool(grow.get("warm_start", False)), out_dir=out_dir, progress=progress)
    metrics: dict[str, Any] = {
        "hyperparameters": dict(zip(HYPER_NAMES, path[-1]["hyper"])),
        "n_parameters": model.n_parameters(), "n_train": len(setup.train),
        "n_valid": len(setup.valid),
        "path": [{k: v for k, v in p.items() if k != "candidates"} for p in path]}
    for name, part in (("valid", setup.valid), ("test", setup.test)):
        if part is not None and len(part):
            metrics[name] = evaluate_structures(model, part, setup.train_config.weights)
    metrics["wall_time_s"] = time.time() - began
    io.save(model.cpu(), out_dir / "model", metadata={"metrics": metrics})
    io.atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


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

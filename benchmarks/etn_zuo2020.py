"""ETN potentials on the Zuo et al. (2020) benchmark (mlearn: Li Mo Si Ge Cu Ni): fit + test.

For each element, fits the model of ``examples/mlearn_<El>_etn.yaml`` (its optimiser,
validation split carved from the training data, best validation loss kept) within a wall-time
budget and evaluates it on the test split. Prints JSON with the test MAE of energies
(meV/atom) and forces (eV/Å), the stress RMSE (GPa, where the data have stresses), the
parameter count, the steps done (L-BFGS iterations or Adam epochs), the wall and CPU time,
the test MAE per configuration type (``[n_structures, energy, force]``; mlearn data only),
and the GAP / MTP test MAE reported by Zuo et al., J. Phys. Chem. A 124, 731 (2020) (as
transcribed in ``shared/data/README.md``) for comparison.

Usage: python benchmarks/etn_zuo2020.py [--elements Mo Si] [--budget 600] [--out runs/zuo2020]
       [--threads 1] [--steps 2000] [--device cuda] [--set n_rad=12 ett_rank=4 ...]
       [--init runs/earlier]

``--set`` overrides model hyperparameters of the example config (``train.KEY=VALUE`` overrides
training options); ``--device cuda`` trains on a GPU (the saved model is a CPU model);
``--init`` grows the models an earlier run wrote (``config init``, ``ETNPotential.embed``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import yaml

from entangle.train.trainer import fit_etn

ELEMENTS = ("Mo", "Li", "Si", "Ge", "Cu", "Ni")
# Zuo et al. (2020) test-set MAE: energy (meV/atom), force (eV/Å); shared/data/README.md
REFERENCE = {
    "Ni": {"GAP": (0.42, 0.02), "MTP": (0.48, 0.01)},
    "Cu": {"GAP": (0.46, 0.01), "MTP": (0.41, 0.01)},
    "Li": {"GAP": (0.49, 0.01), "MTP": (0.49, 0.01)},
    "Mo": {"GAP": (2.24, 0.09), "MTP": (2.83, 0.09)},
    "Si": {"GAP": (2.91, 0.07), "MTP": (2.21, 0.06)},
    "Ge": {"GAP": (2.06, 0.05), "MTP": (1.79, 0.05)},
}
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_element(element: str, budget: float, out: Path, steps: int | None,
                device: str = "cpu", overrides: dict | None = None,
                init: Path | None = None) -> dict:
    """Fit and test one element with its example config, starting from the trained model in
    ``init/<element>`` if given; returns the JSON record."""
    config = yaml.safe_load((EXAMPLES / f"mlearn_{element}_etn.yaml").read_text())
    if init is not None:
        config["init"] = str(init / element)
    train = dict(config.get("train", {}))
    train["max_time_s"] = budget
    train["device"] = device
    if steps is not None:
        train["max_steps"] = steps
    for key, value in (overrides or {}).items():
        if key.startswith("train."):
            train[key[6:]] = value
        else:
            config["model"][key] = value
    config["train"] = train
    cpu0, wall0 = time.process_time(), time.time()
    metrics = fit_etn(config, out / element, progress=False)
    test = metrics.get("test") or {}
    record = {
        "n_parameters": metrics["n_parameters"], "n_train": metrics["n_train"],
        "n_valid": metrics["n_valid"], "steps": metrics["steps"],
        "optimizer": config["train"].get("optimizer", "lbfgs"),
        "hyperparameters": {k: config["model"][k] for k in
                            ("n_rad", "d", "L", "spec_rank", "rad_rank", "ett_rank")},
        "loss_weights": train.get("weights"), "device": device, "init": config.get("init"),
        "test_energy_mae_mev_per_atom": test.get("energy_mae_mev_per_atom"),
        "test_energy_rmse_mev_per_atom": test.get("energy_rmse_mev_per_atom"),
        "test_force_mae_ev_per_a": test.get("force_mae_ev_per_a"),
        "test_force_rmse_ev_per_a": test.get("force_rmse_ev_per_a"),
        "test_stress_rmse_gpa": test.get("stress_rmse_gpa"),
        "test_mae_by_config_type": {  # energy meV/atom, forces eV/Å
            kind: [m["n_structures"], m["energy_mae_mev_per_atom"], m["force_mae_ev_per_a"]]
            for kind, m in test.get("by_config_type", {}).items()},
        "valid_energy_mae_mev_per_atom": (metrics.get("valid") or {}).get(
            "energy_mae_mev_per_atom"),
        "valid_force_mae_ev_per_a": (metrics.get("valid") or {}).get("force_mae_ev_per_a"),
        "wall_time_s": time.time() - wall0, "cpu_time_s": time.process_time() - cpu0,
        "reference_test_mae": {k: {"energy_mev_per_atom": e, "force_ev_per_a": f}
                               for k, (e, f) in REFERENCE[element].items()},
    }
    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--elements", nargs="+", default=list(ELEMENTS), choices=ELEMENTS)
    parser.add_argument("--budget", type=float, default=600.0, help="fit wall time per element, s")
    parser.add_argument("--steps", type=int, default=None,
                        help="override max steps (L-BFGS iterations or Adam epochs)")
    parser.add_argument("--out", type=Path, default=Path("runs/etn_zuo2020"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--init", type=Path, default=None,
                        help="start each element from the trained model in INIT/<element> "
                             "(an earlier --out), grown to the example's or --set's size")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="model (or train.KEY) overrides, values parsed as YAML")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    results = {"budget_s": args.budget, "threads": args.threads, "device": args.device,
               "overrides": overrides, "load_average": os.getloadavg(), "elements": {}}
    for element in args.elements:
        results["elements"][element] = run_element(element, args.budget, args.out, args.steps,
                                                   args.device, overrides, args.init)
        print(json.dumps({element: results["elements"][element]}), flush=True)
    results["load_average_end"] = os.getloadavg()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

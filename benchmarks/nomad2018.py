"""NOMAD 2018 (Al,Ga,In)2O3 mixing energies: Sommer & Dunham, Sec. IV A and Fig. 12.

Three subcommands (run from the repository root with ``PYTHONPATH=src``):

``kaggle``: one config-driven fit on the official Kaggle split (2,400 train with an 80/20
train/validation split, 600 test), :func:`entangle.train.descriptor_fit.fit_descriptor_model`::

    python benchmarks/nomad2018.py kaggle --config examples/nomad2018_mpo.yaml --out runs/nomad2018_mpo

``curves``: learning curves as in Fig. 12. For each of ``--splits`` random test sets of 600 of
the 3,000 structures (train + test CSVs), training subsets of each size in ``--sizes`` are drawn
from the remaining 2,400, stratified by space group, then split 80/20 (again stratified) into
training and validation (early stopping and, for the GPR, nothing: the marginal likelihood
sets its hyperparameters). Test RMSE and MAE (meV/cation) are averaged over the splits::

    python benchmarks/nomad2018.py curves --splits 3 --sizes 100 200 400 800 --out runs/bench/nomad2018

``merge``: combine partial ``curves`` runs (``--only-splits``, e.g. two processes on two cores)::

    python benchmarks/nomad2018.py curves --only-splits 0 1 2 3 4 --out runs/bench/nomad2018_a
    python benchmarks/nomad2018.py curves --only-splits 5 6 7 8 9 --out runs/bench/nomad2018_b
    python benchmarks/nomad2018.py merge runs/bench/nomad2018_{a,b}/curves.json --out runs/bench/nomad2018

All print one JSON object; ``curves``/``merge`` also write ``curves.json`` and ``curves.png``.
``kaggle`` adds ``test_rmsle_formation_energy_ev_per_atom`` and ``test_mae_mev_per_atom`` (the
same numbers as the fit's ``test_rmsle`` and ``test_mae_mev_csv_scale``: Sutton et al.'s Table 1
scale, see BENCHMARKS.md) to the fit's metrics.

Training recipe of the TN models (:data:`MODELS`, the same as ``examples/nomad2018_*.yaml``):
the convex Huber-ridge linear fit on the standardised descriptor (IRLS,
:func:`entangle.models.descriptor_tn.linear_warm_start`), loaded exactly into an MPS with
χ = 16 (full rank) or into the linear term of the MPO (χ = 4, ``linear_chi`` = 16), then
full-batch L-BFGS on the Huber loss with early stopping on the validation split (the start
counts, so fine-tuning can only be kept when it lowers the validation loss). For every training
subset the MPS picks the ridge among :data:`_RIDGES` by validation RMSE; the MPO reuses that
choice (same linear start, one MPO fit instead of three). The DNN (Adam, one setting) and the GPRs
(marginal likelihood) are unchanged. Every fit records wall and CPU seconds (``fit_wall_s``,
``fit_cpu_s``): on a shared machine the CPU time is the meaningful cost.
The descriptor (SOAP B2, r_c = 6 Å, n_max = 4, l_max = 3, structure average, eq. 22) is computed
once and cached under ``--cache`` (``runs/cache``); every split and model reads the same array.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from entangle import io
from entangle.data import load
from entangle.train.descriptor_fit import (
    DEFAULT_CONFIG, Standardization, build_model, compute_descriptors, fit_descriptor_model, n_parameters,
    soap_config, target_values, train_model,
)

TARGET = "mixing_energy_mev_per_cation"

#: Per model: config ``model`` section, ``train`` overrides, whether inputs are standardised
#: (:class:`~entangle.train.descriptor_fit.Standardization`; the SOAP kernel sees raw spectra) and
#: ``candidates``: overrides of the model section among which the validation RMSE chooses, for
#: every training subset (the paper tunes hyperparameters on the validation sets).
_TN_TRAIN = {"optimizer": "lbfgs", "loss": "huber", "huber_delta": 0.05, "warm_start": "linear",
             "warm_start_ridge": 3e-6, "epochs": 200, "patience": 1, "lbfgs_iterations": 10}
_RIDGES = [{"train": {"warm_start_ridge": r}} for r in (1e-5, 1e-3, 1e-1)]
MODELS: dict[str, dict] = {
    "mps": {"model": {"kind": "mps", "chi": 16}, "train": _TN_TRAIN, "standardize": True, "candidates": _RIDGES},
    "mpo": {"model": {"kind": "mpo", "chi": 4, "linear_chi": 16, "dtype": "float32"}, "train": _TN_TRAIN,
            "standardize": True, "candidates": _RIDGES},
    "gpr_rbf": {"model": {"kind": "gpr_rbf"}, "train": {}, "standardize": True, "candidates": [{}]},
    "gpr_soap": {"model": {"kind": "gpr_soap", "zeta": 2}, "train": {}, "standardize": False, "candidates": [{}]},
    "dnn": {"model": {"kind": "dnn", "hidden": [1024, 512, 256], "dtype": "float32"},
            "train": {"epochs": 200, "patience": 10, "batch_size": 128, "lr": 1e-3}, "standardize": True,
            "candidates": [{"model": {"dropout": 0.0}}]},
    # the previous, slower DNN protocol (smaller batches, longer patience, dropout chosen on
    # validation): a stronger baseline where the training sets are tiny (the 100/200 claim)
    "dnn_long": {"model": {"kind": "dnn", "hidden": [1024, 512, 256], "dtype": "float32"},
                 "train": {"epochs": 500, "patience": 30, "batch_size": 64, "lr": 1e-3}, "standardize": True,
                 "candidates": [{"model": {"dropout": 0.0}}, {"model": {"dropout": 0.2}}]},
}


# ------------------------------------------------------------------------------------------ kaggle
def run_kaggle(config_path: Path, out: Path) -> dict:
    """Fit one YAML config (see ``examples/nomad2018_*.yaml``); adds the Kaggle metric (RMSLE of
    the per-atom formation energy, eV/atom) computed from the saved model's test predictions."""
    config = yaml.safe_load(config_path.read_text())
    metrics = fit_descriptor_model(config, out, progress=True)
    data = config.get("data", {})
    if data.get("test"):
        from entangle.train.descriptor_fit import predict_descriptor_model
        structures = list(load(data["test"]))[: data.get("max_test")]
        cache = config.get("descriptor", {}).get("cache_dir", DEFAULT_CONFIG["descriptor"]["cache_dir"])
        prediction = predict_descriptor_model(out, structures, cache_dir=cache) / 2500.0  # eV/atom
        reference = np.array([s.properties["formation_energy_ev_natom"] for s in structures])
        metrics["test_rmsle_formation_energy_ev_per_atom"] = rmsle(prediction, reference)
        metrics["test_mae_mev_per_atom"] = float(np.mean(np.abs(prediction - reference))) * 1000.0
    return metrics


def rmsle(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Kaggle's root mean squared log error, ``log1p`` of both (negative predictions clipped to 0)."""
    return float(np.sqrt(np.mean((np.log1p(np.clip(prediction, 0.0, None)) - np.log1p(reference)) ** 2)))


# ------------------------------------------------------------------------------------------ curves
def stratified_sample(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` positions of ``labels`` with every label represented in proportion (largest
    remainder rounding), drawn without replacement; returned in random order."""
    groups, counts = np.unique(labels, return_counts=True)
    quota = counts * size / counts.sum()
    take = np.floor(quota).astype(int)
    for g in np.argsort(-(quota - take), kind="stable")[: size - take.sum()]:
        take[g] += 1
    chosen = [rng.choice(np.flatnonzero(labels == g), size=t, replace=False) for g, t in zip(groups, take)]
    out = np.concatenate(chosen)
    return out[rng.permutation(out.size)]


def _errors(prediction: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    error = prediction - reference
    return float(np.sqrt(np.mean(error**2))), float(np.mean(np.abs(error)))


def load_nomad(cache: str | None) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, object]:
    """All 3,000 structures (train + test CSVs): SOAP descriptors ``[3000, 4, 4, 4, 4, 4]``
    (cached per CSV, so the Kaggle-split fits' caches are re-used), mixing energies
    (meV/cation), space groups (the strata) and the SOAP settings."""
    parts = [list(load("nomad2018:train")), list(load("nomad2018:test"))]
    structures = parts[0] + parts[1]
    settings = soap_config(DEFAULT_CONFIG["descriptor"])
    x_all = torch.cat([compute_descriptors(p, settings, cache_dir=cache, progress=True) for p in parts])
    y_all = torch.from_numpy(target_values(structures, TARGET))
    groups = np.array([s.properties["spacegroup"] for s in structures])
    return x_all, y_all, groups, settings


def draw_subset(pool: np.ndarray, groups: np.ndarray, size: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """A training subset of ``size`` from ``pool`` stratified by space group, split 80/20 (again
    stratified) into ``(train_idx, val_idx)``, as the ``curves`` learning curves draw them."""
    subset = pool[stratified_sample(groups[pool], size, rng)]
    val_idx = subset[stratified_sample(groups[subset], round(0.2 * size), rng)]
    return np.setdiff1d(subset, val_idx), val_idx


def fit_one(name: str, x_train, y_train, x_val, y_val, x_test, seed: int, select: bool = True,
            candidates: list[dict] | None = None) -> tuple[np.ndarray, int, dict]:
    """Train model ``name`` of :data:`MODELS` (each candidate when ``select``, keeping the one with
    the lowest validation RMSE) and predict the test set. ``candidates`` overrides the model's own
    list (the curves give the MPO the ridge that the MPS chose on the same validation split: both
    start from the same convex linear fit, so the choice is shared and the MPO is trained once)."""
    spec = MODELS[name]
    if spec["standardize"]:
        scaler = Standardization.fit(x_train)
        x_train, x_val, x_test = scaler(x_train), scaler(x_val), scaler(x_test)
    best = None
    for candidate in ((candidates or spec["candidates"]) if select else [{}]):
        section = dict(spec["model"], **candidate.get("model", {}))
        train = {**DEFAULT_CONFIG["train"], **spec["train"], **candidate.get("train", {})}
        model = build_model(section, x_train.shape[1:], seed)
        info = train_model(model, section["kind"], train, x_train, y_train, x_val, y_val, seed)
        model.eval()
        with torch.no_grad():
            val_rmse = float(torch.sqrt(((model(x_val).double() - y_val) ** 2).mean()))
            if best is None or val_rmse < best[0]:
                best = (val_rmse, model(x_test).double().numpy(), n_parameters(model),
                        {**info, "chosen": candidate, "validation_rmse_mev_per_cation": val_rmse})
    return best[1], best[2], best[3]


def run_curves(n_splits: int, sizes: list[int], models: list[str], seed: int, cache: str | None,
               test_size: int = 600, select: bool = True, only_splits: list[int] | None = None) -> dict:
    """Learning curves (module docstring); returns the JSON-serialisable results.

    ``only_splits``: run only these of the ``n_splits`` splits (the split ``k`` is the same in
    every run, seeded by ``seed + k``); partial runs are combined with ``merge``."""
    start, cpu_start = time.perf_counter(), time.process_time()
    x_all, y_all, groups, settings = load_nomad(cache)
    n_total = len(groups)
    if max(sizes) > n_total - test_size:
        raise SystemExit(f"largest size {max(sizes)} exceeds the {n_total - test_size} non-test structures")
    raw: dict[str, dict[int, list[dict]]] = {m: {n: [] for n in sizes} for m in models}
    for split in (range(n_splits) if only_splits is None else only_splits):
        rng = np.random.default_rng(seed + split)
        test_idx = rng.choice(n_total, size=test_size, replace=False)
        pool = np.setdiff1d(np.arange(n_total), test_idx)
        for size in sizes:
            train_idx, val_idx = draw_subset(pool, groups, size, rng)
            shared = None
            for name in models:
                t0, c0 = time.perf_counter(), time.process_time()
                prediction, n_par, info = fit_one(name, x_all[train_idx], y_all[train_idx], x_all[val_idx],
                                                  y_all[val_idx], x_all[test_idx], seed + split, select,
                                                  candidates=shared if name == "mpo" else None)
                if name == "mps":
                    shared = [info["chosen"]]
                rmse, mae = _errors(prediction, y_all[test_idx].numpy())
                record = {"split": split, "test_rmse_mev_per_cation": rmse, "test_mae_mev_per_cation": mae,
                          "n_parameters": n_par, "fit_wall_s": time.perf_counter() - t0,
                          "fit_cpu_s": time.process_time() - c0, **info}
                raw[name][size].append(record)
                print(f"split {split} size {size:5d} {name:9s} RMSE {rmse:7.2f} MAE {mae:7.2f} meV/cation "
                      f"({record['fit_wall_s']:.1f} s, {record['chosen']})", file=sys.stderr, flush=True)
    return {"benchmark": "nomad2018_learning_curves", "target": TARGET, "units": "meV/cation",
            "n_splits": n_splits, "splits_run": list(range(n_splits)) if only_splits is None else list(only_splits),
            "sizes": sizes, "test_size": test_size, "seed": seed, "select": select,
            "models": {m: MODELS[m] for m in models}, "descriptor": settings.to_dict(),
            **summarize(raw, models, sizes), "per_fit": raw,
            "wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu_start,
            "threads": torch.get_num_threads()}


def summarize(raw: dict, models: list[str], sizes: list[int]) -> dict:
    """Mean/std over splits of the per-fit records ``raw[model][size]`` and the 100/200 claims."""
    summary: dict[str, dict[str, dict]] = {}
    for name in models:
        summary[name] = {}
        for size in sizes:
            records = raw[name][size] if size in raw[name] else raw[name][str(size)]
            entry = {"n_parameters": [r["n_parameters"] for r in records],
                     "fit_wall_s_mean": float(np.mean([r["fit_wall_s"] for r in records])),
                     "fit_cpu_s_mean": float(np.mean([r.get("fit_cpu_s", math.nan) for r in records]))}
            for key in ("test_rmse_mev_per_cation", "test_mae_mev_per_cation"):
                values = np.array([r[key] for r in records])
                entry[key] = {"mean": float(values.mean()), "std": float(values.std()), "values": values.tolist()}
            summary[name][str(size)] = entry
    claims = {}
    for size in (100, 200):
        if size not in sizes:
            continue
        for tn in ("mps", "mpo"):
            for other in ("gpr_soap", "dnn", "dnn_long"):
                if tn in models and other in models:
                    a = summary[tn][str(size)]["test_rmse_mev_per_cation"]
                    b = summary[other][str(size)]["test_rmse_mev_per_cation"]
                    claims[f"{tn}_rmse_below_{other}_at_{size}"] = bool(a["mean"] < b["mean"])
                    claims[f"{tn}_rmse_below_{other}_at_{size}_splits_won"] = int(
                        sum(x < y for x, y in zip(a["values"], b["values"])))
    return {"results": summary, "claims_tn_beats_baselines_rmse": claims}


def merge_curves(paths: list[Path]) -> dict:
    """Combine partial ``curves.json`` files (disjoint ``splits_run``) into one result."""
    parts = [json.loads(p.read_text()) for p in paths]
    first = parts[0]
    models, sizes = list(first["results"]), first["sizes"]
    raw = {m: {str(n): [r for part in parts for r in part["per_fit"][m][str(n)]] for n in sizes} for m in models}
    splits = sorted(k for part in parts for k in part["splits_run"])
    if len(set(splits)) != len(splits):
        raise SystemExit(f"overlapping splits in {paths}: {splits}")
    out = {k: v for k, v in first.items() if k not in ("results", "claims_tn_beats_baselines_rmse", "per_fit")}
    out.update({"splits_run": splits, "n_splits": len(splits), **summarize(raw, models, sizes), "per_fit": raw,
                "wall_s": sum(part["wall_s"] for part in parts),
                "cpu_s": sum(part.get("cpu_s", math.nan) for part in parts), "merged_from": [str(p) for p in paths]})
    return out


def plot_curves(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for ax, key, label in zip(axes, ("test_rmse_mev_per_cation", "test_mae_mev_per_cation"), ("(a) RMSE", "(b) MAE")):
        for name, per_size in results["results"].items():
            sizes = [int(s) for s in per_size]
            mean = [per_size[str(s)][key]["mean"] for s in sizes]
            std = [per_size[str(s)][key]["std"] for s in sizes]
            ax.errorbar(sizes, mean, yerr=std, marker="o", capsize=3, label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training set size (train + validation)")
        ax.set_ylabel(f"test {label[4:]} (meV/cation)")
        ax.set_title(f"{label}, {results['n_splits']} test splits of {results['test_size']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    import io as _io
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    io.atomic_write_bytes(path, buffer.getvalue())


# ------------------------------------------------------------------------------ bond-study (Fig. 14)
#: Training recipe of the bond-dimension study: pure tensor-network training from the random start
#: (no linear warm start, no linear term of the MPO), full-batch L-BFGS on the Huber loss with early
#: stopping on the validation split, as the TN models of ``curves`` are fine-tuned.
_BOND_TRAIN = {"optimizer": "lbfgs", "loss": "huber", "huber_delta": 0.05, "warm_start": None,
               "lbfgs_iterations": 10}
_BOND_MODELS = {"mps": {"kind": "mps", "dtype": "float64"}, "mpo": {"kind": "mpo", "dtype": "float32", "linear_chi": 0}}


def _entanglement_record(model) -> dict:
    """Von Neumann entropies (nats) of a trained model at the default bipartitions and per bond."""
    from entangle.analysis import default_bipartitions, entropy, model_state, schmidt_values
    state, names = model_state(model)
    cuts = default_bipartitions(names)
    return {"entropy": {label: entropy(schmidt_values(state, legs)) for label, legs in cuts.items()},
            "bond_entropies": [float(v) for v in model.bond_entropies()], "bond_dims": list(model.bond_dims)}


def _page_references(dims: list[int]) -> dict:
    """Page entropy and maximal entropy ln(min(d_A, d_B)) of the default bipartitions, for the MPS
    (legs ``d``) and for the MPO's Choi vector (legs ``d**2``)."""
    from entangle.analysis import default_bipartitions, page_entropy
    from entangle.models.descriptor_tn import DEFAULT_INDEX_NAMES
    out = {}
    for model, power in (("mps", 1), ("mpo", 2)):
        out[model] = {}
        for label, legs in default_bipartitions(list(DEFAULT_INDEX_NAMES)).items():
            d_a = math.prod(dims[k] ** power for k in legs)
            d_b = math.prod(dims[k] ** power for k in range(len(dims)) if k not in legs)
            out[model][label] = {"d_A": d_a, "d_B": d_b, "page_entropy": page_entropy(d_a, d_b),
                                 "max_entropy": math.log(min(d_a, d_b))}
    return out


def run_bond_study(sizes: list[int], chis: list[int], models: list[str], n_seeds: int, seed: int, cache: str | None,
                   epochs: dict[str, int], patience: int, test_size: int = 600) -> dict:
    """Fig. 14: test errors and entanglement entropies of MPS and MPO models against the bond
    dimension. One fixed test set of ``test_size`` (seeded by ``seed``); per training size,
    ``n_seeds`` stratified training/validation subsets of the remaining structures (as ``curves``
    draws them), each model initialised with that seed. For the MPS, a ``chi`` whose capped bonds
    equal those of the previous one (``chi >= 16`` for 4^5 legs) is the same model and is skipped."""
    from entangle.analysis import compression_threshold
    start, cpu_start = time.perf_counter(), time.process_time()
    x_all, y_all, groups, settings = load_nomad(cache)
    dims = list(x_all.shape[1:])
    rng = np.random.default_rng(seed)
    test_idx = rng.choice(len(groups), size=test_size, replace=False)
    pool = np.setdiff1d(np.arange(len(groups)), test_idx)
    raw: dict[str, dict[str, dict[str, list[dict]]]] = {m: {str(n): {} for n in sizes} for m in models}
    for size in sizes:
        for k in range(n_seeds):
            train_idx, val_idx = draw_subset(pool, groups, size, np.random.default_rng([seed, size, k]))
            scaler = Standardization.fit(x_all[train_idx])
            xt, xv, xs = scaler(x_all[train_idx]), scaler(x_all[val_idx]), scaler(x_all[test_idx])
            for name in models:
                previous_bonds = None
                for chi in chis:
                    model = build_model(dict(_BOND_MODELS[name], chi=chi), dims, seed + k)
                    if model.bond_dims == previous_bonds:
                        continue  # capped: identical to the previous chi
                    previous_bonds = list(model.bond_dims)
                    t0, c0 = time.perf_counter(), time.process_time()
                    train = {**DEFAULT_CONFIG["train"], **_BOND_TRAIN, "epochs": epochs[name], "patience": patience}
                    info = train_model(model, name, train, xt, y_all[train_idx], xv, y_all[val_idx], seed + k)
                    model.eval()
                    with torch.no_grad():
                        prediction = model(xs).double().numpy()
                    rmse, mae = _errors(prediction, y_all[test_idx].numpy())
                    record = {"seed": k, "chi": chi, "test_rmse_mev_per_cation": rmse, "test_mae_mev_per_cation": mae,
                              "n_parameters": n_parameters(model), "fit_wall_s": time.perf_counter() - t0,
                              "fit_cpu_s": time.process_time() - c0, **info, **_entanglement_record(model)}
                    raw[name][str(size)].setdefault(str(chi), []).append(record)
                    print(f"size {size:5d} seed {k} {name} chi {chi:3d} RMSE {rmse:7.2f} MAE {mae:7.2f} "
                          f"S {list(record['entropy'].values())[0]:.3f} ({record['fit_wall_s']:.1f} s, "
                          f"{info['epochs']} epochs)", file=sys.stderr, flush=True)
    dense = {"mps": math.prod(dims), "mpo": math.prod(dims) ** 2}  # dense weight tensor / operator
    results: dict[str, dict] = {}
    for name in models:
        results[name] = {}
        for size in sizes:
            per_chi = raw[name][str(size)]
            chi_list = sorted(int(c) for c in per_chi)
            entry: dict = {"chi": chi_list}
            for key in ("test_rmse_mev_per_cation", "test_mae_mev_per_cation"):
                values = [[r[key] for r in per_chi[str(c)]] for c in chi_list]
                entry[key] = {"mean": [float(np.mean(v)) for v in values], "std": [float(np.std(v)) for v in values]}
            labels = list(per_chi[str(chi_list[0])][0]["entropy"])
            entry["entropy"] = {lab: {"mean": [float(np.mean([r["entropy"][lab] for r in per_chi[str(c)]])) for c in chi_list],
                                      "std": [float(np.std([r["entropy"][lab] for r in per_chi[str(c)]])) for c in chi_list]}
                                for lab in labels}
            entry["bond_entropies_mean"] = [np.mean([r["bond_entropies"] for r in per_chi[str(c)]], axis=0).tolist()
                                            for c in chi_list]
            entry["n_parameters"] = [per_chi[str(c)][0]["n_parameters"] for c in chi_list]
            rm = entry["test_rmse_mev_per_cation"]
            entry["chi_ct"] = compression_threshold(chi_list, rm["mean"], rm["std"], rel_tol=0.02, n_std=1.0)
            entry["chi_ct_2pct"] = compression_threshold(chi_list, rm["mean"], rel_tol=0.02)
            entry["chi_ct_mae"] = compression_threshold(chi_list, entry["test_mae_mev_per_cation"]["mean"],
                                                        entry["test_mae_mev_per_cation"]["std"], rel_tol=0.02, n_std=1.0)
            below = [c for c, n in zip(chi_list, entry["n_parameters"]) if n <= dense[name]]
            entry["chi_ct_parameters"] = max(below) if below else None
            results[name][str(size)] = entry
    return {"benchmark": "nomad2018_bond_study", "figure": "Sommer & Dunham Fig. 14", "target": TARGET,
            "units": "meV/cation", "sizes": sizes, "chis": chis, "n_seeds": n_seeds, "seed": seed,
            "test_size": test_size, "train": {**_BOND_TRAIN, "epochs": epochs, "patience": patience},
            "models": {m: _BOND_MODELS[m] for m in models}, "descriptor": settings.to_dict(),
            "dense_parameters": dense, "page": _page_references(dims),
            "chi_ct_definition": ("chi_ct: smallest chi such that every chi' >= chi has mean test RMSE <= best + "
                                  "max(2% of best, 1 std over seeds at the best chi); chi_ct_2pct: the same with "
                                  "2% only; chi_ct_mae: the rule on the MAE; chi_ct_parameters (the paper's "
                                  "definition): largest chi with no more parameters than the dense tensor "
                                  "(1024 weights; for the MPO the dense 1024x1024 operator)"),
            "results": results, "per_fit": raw,
            "wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu_start,
            "threads": torch.get_num_threads()}


def plot_bond_study(result: dict, path: Path) -> None:
    """(a) test RMSE, (b) MAE, (c, d) entropy at the two default bipartitions against chi; both
    models and sizes, chi_ct as dotted vertical lines, the MPS Page entropy as a red line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), dpi=110)
    styles = {"mps": "o", "mpo": "s"}
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    labels = None
    for i, (name, per_size) in enumerate(result["results"].items()):
        for j, (size, entry) in enumerate(per_size.items()):
            color = colors[(2 * i + j) % len(colors)]
            tag = f"{name.upper()} n={size}"
            for ax, key in zip(axes[0], ("test_rmse_mev_per_cation", "test_mae_mev_per_cation")):
                ax.errorbar(entry["chi"], entry[key]["mean"], yerr=entry[key]["std"], marker=styles[name],
                            color=color, capsize=3, label=tag)
                ax.axvline(entry["chi_ct"], color=color, ls=":", lw=1.2)
            labels = list(entry["entropy"])
            for ax, lab in zip(axes[1], labels):
                ent = entry["entropy"][lab]
                ax.errorbar(entry["chi"], ent["mean"], yerr=ent["std"], marker=styles[name], color=color, capsize=3,
                            label=tag)
                ax.axvline(entry["chi_ct"], color=color, ls=":", lw=1.2)
    for ax, title in zip(axes[0], ("(a) test RMSE", "(b) test MAE")):
        ax.set_ylabel(f"{title[4:]} (meV/cation)")
        ax.set_title(f"{title}; dotted: χ_ct")
        ax.set_yscale("log")
    for ax, lab, tag in zip(axes[1], labels or [], ("(c)", "(d)")):
        page = result["page"]["mps"][lab]
        ax.axhline(page["page_entropy"], color="red", lw=1.5, label=f"Page (MPS, {page['d_A']}x{page['d_B']})")
        ax.set_ylabel("S (nats)")
        ax.set_title(f"{tag} entropy at {{{lab.split(' | ')[0]}}} | {{{lab.split(' | ')[1]}}}", fontsize=9)
    for ax in axes.ravel():
        ax.set_xscale("log", base=2)
        ax.set_xlabel("bond dimension χ")
        ax.legend(fontsize=7)
    fig.suptitle(f"NOMAD2018, random-start TN training, {result['n_seeds']} training subsets, "
                 f"fixed test set of {result['test_size']}", fontsize=10)
    fig.tight_layout()
    import io as _io
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    io.atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------- spectrum-tracking (Fig. 15)
def run_spectrum_tracking(size: int, n_runs: int, chi: int, epochs: int, every: int, seed: int, cache: str | None,
                          lr: float, batch_size: int, bipartition: list[str], test_size: int = 600) -> dict:
    """Fig. 15: entanglement-spectrum statistics of the MPO (Choi vector) at ``bipartition``
    during Adam training from ``n_runs`` random initialisations on one fixed stratified training
    subset of ``size`` (80/20 train/validation; no early stopping, so every run has the whole
    trajectory; the best-validation weights are restored at the end and analysed as "final")."""
    from entangle.analysis import (
        EntanglementTracker, capacity_of_entanglement, entanglement_spectrum, entropy, kl_divergence_to_reference,
        level_spacing_ratios, marchenko_pastur_ks, min_ratio, model_state, page_entropy, poisson_min_ratio_mean,
        resolve_subsystem, schmidt_values, wigner_dyson_min_ratio_mean,
    )
    from entangle.models.descriptor_tn import fit_model
    start, cpu_start = time.perf_counter(), time.process_time()
    x_all, y_all, groups, settings = load_nomad(cache)
    dims = list(x_all.shape[1:])
    rng = np.random.default_rng(seed)
    test_idx = rng.choice(len(groups), size=test_size, replace=False)
    pool = np.setdiff1d(np.arange(len(groups)), test_idx)
    train_idx, val_idx = draw_subset(pool, groups, size, rng)
    scaler = Standardization.fit(x_all[train_idx])
    xt, xv, xs = scaler(x_all[train_idx]), scaler(x_all[val_idx]), scaler(x_all[test_idx])
    label = "{" + " ".join(bipartition) + "}"
    tracker = EntanglementTracker({label: bipartition}, every=every)
    runs = []
    initial_ratios, final_ratios, initial_spectra, final_spectra = [], [], [], []
    d_a = d_b = None
    for run in range(n_runs):
        model = build_model({"kind": "mpo", "chi": chi, "dtype": "float32"}, dims, seed + run)
        tracker.start_run(run)
        tracker(model, 0)  # the random initialisation is epoch 0
        t0 = time.perf_counter()
        history = fit_model(model, xt, y_all[train_idx], validation=(xv, y_all[val_idx]), epochs=epochs, lr=lr,
                            batch_size=batch_size, patience=epochs, seed=seed + run, optimizer="adam", loss="mse",
                            callback=lambda m, e: tracker(m, e + 1))
        model.eval()
        with torch.no_grad():
            rmse, mae = _errors(model(xs).double().numpy(), y_all[test_idx].numpy())
        state, names = model_state(model)
        legs = resolve_subsystem(bipartition, names)
        d_a = math.prod(state.shape[k] for k in legs)
        d_b = state.numel() // d_a
        s = schmidt_values(state, legs)
        p = entanglement_spectrum(s)
        r = level_spacing_ratios(p)
        first = [rec for rec in tracker.records if rec["run"] == run and rec["epoch"] == 0][0]
        initial_ratios.append(first["ratios"])
        initial_spectra.append(first["spectrum"])
        final_ratios.append(r)
        final_spectra.append(p)
        runs.append({"run": run, "test_rmse_mev_per_cation": rmse, "test_mae_mev_per_cation": mae,
                     "best_epoch": history.best_epoch + 1, "fit_wall_s": time.perf_counter() - t0,
                     "final_entropy": entropy(s), "final_capacity": capacity_of_entanglement(s),
                     "final_mean_min_ratio": float(min_ratio(r).mean()),
                     "final_kl_to_goe": kl_divergence_to_reference(r, "goe"),
                     "final_kl_to_poisson": kl_divergence_to_reference(r, "poisson"),
                     "final_marchenko_pastur_ks": marchenko_pastur_ks(p, d_a, d_b),
                     "initial_marchenko_pastur_ks": marchenko_pastur_ks(first["spectrum"], d_a, d_b)})
        print(f"run {run}: RMSE {rmse:.2f} MAE {mae:.2f} best epoch {history.best_epoch + 1} "
              f"<r~> {runs[-1]['final_mean_min_ratio']:.3f} KL(GOE) {runs[-1]['final_kl_to_goe']:.3f} "
              f"KL(Poisson) {runs[-1]['final_kl_to_poisson']:.3f} C_E {runs[-1]['final_capacity']:.2f} "
              f"({runs[-1]['fit_wall_s']:.1f} s)", file=sys.stderr, flush=True)
    summary = tracker.summary(label)
    # per run and epoch: KL to GOE / Poisson and <r~>, then mean and std over runs
    per_epoch = {key: [] for key in ("kl_goe", "kl_poisson", "mean_min_ratio", "capacity", "entropy")}
    for epoch in summary["epochs"]:
        rows = [rec for rec in tracker.records if rec["epoch"] == epoch and rec["ratios"].size]
        per_epoch["kl_goe"].append([kl_divergence_to_reference(rec["ratios"], "goe") for rec in rows])
        per_epoch["kl_poisson"].append([kl_divergence_to_reference(rec["ratios"], "poisson") for rec in rows])
        per_epoch["mean_min_ratio"].append([float(min_ratio(rec["ratios"]).mean()) for rec in rows])
        per_epoch["capacity"].append([rec["capacity"] for rec in rows])
        per_epoch["entropy"].append([rec["entropy"] for rec in rows])
    trajectory = {"epochs": summary["epochs"],
                  **{f"{k}_mean": [float(np.mean(v)) for v in vals] for k, vals in per_epoch.items()},
                  **{f"{k}_std": [float(np.std(v)) for v in vals] for k, vals in per_epoch.items()},
                  "pooled_kl_goe": summary["kl_to_goe"], "pooled_mean_min_ratio": summary["mean_min_ratio"],
                  "mean_log_spectrum": summary["mean_log_spectrum"]}

    def pooled(ratios: list[np.ndarray]) -> dict:
        r = np.concatenate(ratios)
        return {"n_ratios": int(r.size), "mean_min_ratio": float(min_ratio(r).mean()),
                "kl_to_goe": kl_divergence_to_reference(r, "goe"), "kl_to_gue": kl_divergence_to_reference(r, "gue"),
                "kl_to_poisson": kl_divergence_to_reference(r, "poisson")}

    final_mean = np.mean(final_spectra, axis=0)
    initial_mean = np.mean(initial_spectra, axis=0)
    scalar_keys = [k for k in runs[0] if k != "run"]
    result = {
        "benchmark": "nomad2018_spectrum_tracking", "figure": "Sommer & Dunham Fig. 15", "target": TARGET,
        "units": "meV/cation", "model": {"kind": "mpo", "chi": chi, "dtype": "float32", "linear_chi": 0},
        "train": {"optimizer": "adam", "loss": "mse", "lr": lr, "batch_size": batch_size, "epochs": epochs,
                  "early_stopping": "none during tracking; best-validation weights restored at the end"},
        "size": size, "n_train": int(train_idx.size), "n_validation": int(val_idx.size), "test_size": test_size,
        "n_runs": n_runs, "every": every, "seed": seed, "bipartition": label, "d_A": d_a, "d_B": d_b,
        "references": {"goe_mean_min_ratio": wigner_dyson_min_ratio_mean(1),
                       "gue_mean_min_ratio": wigner_dyson_min_ratio_mean(2),
                       "poisson_mean_min_ratio": poisson_min_ratio_mean(), "page_entropy": page_entropy(d_a, d_b),
                       "max_entropy": math.log(min(d_a, d_b))},
        "initial_pooled": pooled(initial_ratios), "final_pooled": pooled(final_ratios),
        "final_over_runs": {k: {"mean": float(np.mean([r[k] for r in runs])), "std": float(np.std([r[k] for r in runs]))}
                            for k in scalar_keys},
        "marchenko_pastur_ks_of_mean_spectrum": {"initial": marchenko_pastur_ks(initial_mean, d_a, d_b),
                                                 "final": marchenko_pastur_ks(final_mean, d_a, d_b)},
        "trajectory": trajectory, "runs": runs,
        "initial_ratios": np.concatenate(initial_ratios).tolist(), "final_ratios": np.concatenate(final_ratios).tolist(),
        "initial_mean_spectrum": initial_mean.tolist(), "final_mean_spectrum": final_mean.tolist(),
        "descriptor": settings.to_dict(), "wall_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu_start, "threads": torch.get_num_threads(),
    }
    return result


def plot_spectrum_tracking(result: dict, out: Path) -> list[Path]:
    """``spectrum_tracking.png`` (KL to GOE and Poisson, <r~> and capacity against the epoch,
    mean ± std over runs), ``spectrum_ratios.png`` (initial and final r~ histograms against the
    surmises) and ``spectrum_mp.png`` (mean spectra against Marchenko–Pastur)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from entangle.analysis.plots import plot_ratio_distribution, plot_spectrum
    tr = result["trajectory"]
    epochs = np.array(tr["epochs"])
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), dpi=110)
    for ax, keys, ylabel in ((axes[0], (("kl_goe", "D_KL(GOE || obs)"), ("kl_poisson", "D_KL(Poisson || obs)")), "KL divergence"),
                             (axes[1], (("mean_min_ratio", "<r~>"),), "<r~>"),
                             (axes[2], (("capacity", "C_E"),), "capacity of entanglement C_E")):
        for key, lab in keys:
            mean, std = np.array(tr[f"{key}_mean"]), np.array(tr[f"{key}_std"])
            ax.plot(epochs, mean, label=lab)
            ax.fill_between(epochs, mean - std, mean + std, alpha=0.25)
        ax.set_xlabel("epoch (0 = random initialisation)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    refs = result["references"]
    axes[1].axhline(refs["goe_mean_min_ratio"], color="k", ls="-", lw=1, label="GOE")
    axes[1].axhline(refs["gue_mean_min_ratio"], color="k", ls="--", lw=1, label="GUE")
    axes[1].axhline(refs["poisson_mean_min_ratio"], color="k", ls=":", lw=1, label="Poisson")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"MPO χ={result['model']['chi']}, Choi bipartition {result['bipartition']}, "
                 f"{result['n_runs']} runs, n={result['size']} (mean ± std over runs)", fontsize=10)
    fig.tight_layout()
    paths = [out / "spectrum_tracking.png"]
    fig.savefig(paths[0])
    plt.close(fig)
    paths.append(plot_ratio_distribution({"initial (random)": np.array(result["initial_ratios"]),
                                          "final (trained)": np.array(result["final_ratios"])},
                                         out / "spectrum_ratios.png", title=f"r~ pooled over {result['n_runs']} runs"))
    paths.append(plot_spectrum({"initial (mean)": np.array(result["initial_mean_spectrum"]),
                                "final (mean)": np.array(result["final_mean_spectrum"])}, out / "spectrum_mp.png",
                               d_a=result["d_A"], d_b=result["d_B"], title="entanglement spectrum vs Marchenko–Pastur"))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    kaggle = sub.add_parser("kaggle", help="one config-driven fit on the official Kaggle split")
    kaggle.add_argument("--config", type=Path, required=True)
    kaggle.add_argument("--out", type=Path, required=True)
    curves = sub.add_parser("curves", help="learning curves (Fig. 12)")
    curves.add_argument("--splits", type=int, default=10, help="number of random test sets (paper: 10)")
    curves.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400, 800, 1600, 2400])
    curves.add_argument("--models", nargs="+", default=[m for m in MODELS if m != "dnn_long"], choices=list(MODELS))
    curves.add_argument("--seed", type=int, default=0)
    curves.add_argument("--cache", default="runs/cache", help="descriptor cache directory ('' = none)")
    curves.add_argument("--out", type=Path, default=Path("runs/bench/nomad2018"))
    curves.add_argument("--no-select", action="store_true",
                        help="train only the default hyperparameters (no choice among the candidates)")
    curves.add_argument("--only-splits", type=int, nargs="+", default=None,
                        help="run only these splits (combine partial runs with 'merge')")
    merge = sub.add_parser("merge", help="combine partial curves.json files (disjoint --only-splits)")
    merge.add_argument("parts", type=Path, nargs="+")
    merge.add_argument("--out", type=Path, required=True)
    bond = sub.add_parser("bond-study", help="errors and entropies against the bond dimension (Fig. 14)")
    bond.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    bond.add_argument("--chis", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    bond.add_argument("--models", nargs="+", default=["mps", "mpo"], choices=list(_BOND_MODELS))
    bond.add_argument("--seeds", type=int, default=3, help="training/validation subsets per size (paper: 10)")
    bond.add_argument("--epochs-mps", type=int, default=100, help="L-BFGS epochs (10 iterations each)")
    bond.add_argument("--epochs-mpo", type=int, default=30, help="L-BFGS epochs (10 iterations each)")
    bond.add_argument("--patience", type=int, default=3)
    bond.add_argument("--seed", type=int, default=0)
    bond.add_argument("--cache", default="runs/cache", help="descriptor cache directory ('' = none)")
    bond.add_argument("--out", type=Path, default=Path("runs/bench/nomad2018"))
    track = sub.add_parser("spectrum-tracking", help="entanglement-spectrum statistics during training (Fig. 15)")
    track.add_argument("--size", type=int, default=400)
    track.add_argument("--runs", type=int, default=10, help="independent initialisations (paper: 100)")
    track.add_argument("--chi", type=int, default=16)
    track.add_argument("--epochs", type=int, default=40, help="Adam epochs (paper: 1000 SGD epochs)")
    track.add_argument("--every", type=int, default=2)
    track.add_argument("--lr", type=float, default=1e-2)
    track.add_argument("--batch-size", type=int, default=32)
    track.add_argument("--bipartition", nargs="+", default=["alpha1", "n1"])
    track.add_argument("--seed", type=int, default=0)
    track.add_argument("--cache", default="runs/cache", help="descriptor cache directory ('' = none)")
    track.add_argument("--out", type=Path, default=Path("runs/bench/nomad2018"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.command == "kaggle":
        result = run_kaggle(args.config, args.out)
    elif args.command == "bond-study":
        result = run_bond_study(sorted(args.sizes), sorted(set(args.chis)), args.models, args.seeds, args.seed,
                                args.cache or None, {"mps": args.epochs_mps, "mpo": args.epochs_mpo}, args.patience)
        args.out.mkdir(parents=True, exist_ok=True)
        io.atomic_write_text(args.out / "bond_study.json", json.dumps(result, indent=2) + "\n")
        plot_bond_study(result, args.out / "bond_study.png")
        result = {k: v for k, v in result.items() if k != "per_fit"}
    elif args.command == "spectrum-tracking":
        result = run_spectrum_tracking(args.size, args.runs, args.chi, args.epochs, args.every, args.seed,
                                       args.cache or None, args.lr, args.batch_size, args.bipartition)
        args.out.mkdir(parents=True, exist_ok=True)
        io.atomic_write_text(args.out / "spectrum_tracking.json", json.dumps(result, indent=2) + "\n")
        plot_spectrum_tracking(result, args.out)
        result = {k: v for k, v in result.items() if k not in ("trajectory", "runs", "initial_ratios", "final_ratios",
                                                                 "initial_mean_spectrum", "final_mean_spectrum")}
    else:
        if args.command == "merge":
            result = merge_curves(args.parts)
        else:
            result = run_curves(args.splits, sorted(args.sizes), args.models, args.seed, args.cache or None,
                                select=not args.no_select, only_splits=args.only_splits)
        args.out.mkdir(parents=True, exist_ok=True)
        io.atomic_write_text(args.out / "curves.json", json.dumps(result, indent=2) + "\n")
        plot_curves(result, args.out / "curves.png")
        result = {k: v for k, v in result.items() if k != "per_fit"}
    print(json.dumps(result, indent=2, default=lambda o: None if isinstance(o, float) and math.isnan(o) else o))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One call that analyses a trained descriptor model and writes PNGs plus a JSON summary.

``analyze_model(model, X, labels, out_dir)`` is what ``entangle analyze MODEL_DIR`` runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from entangle.analysis.entanglement import (
    EntanglementTracker, default_bipartitions, level_spacing_ratios, min_ratio, model_state, resolve_subsystem,
    schmidt_values, spectrum_statistics,
)
from entangle.analysis.latent import default_perplexity, hidden_representations, tsne_embeddings
from entangle.analysis.plots import (
    plot_bond_entropies, plot_capacity, plot_latent, plot_ratio_distribution, plot_spectrum,
)
from entangle.errors import ShapeError
from entangle.io import atomic_write_text

__all__ = ["analyze_model"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _bond_labels(model: torch.nn.Module) -> list[str] | None:
    order = getattr(model.config, "site_order", None)
    names = list(model.config.index_names)
    if order is None or len(order) != len(names):
        return None
    sites = [names[p] for p in order]
    return [f"{' '.join(sites[:k])} | {' '.join(sites[k:])}" for k in range(1, len(sites))]


def analyze_model(model: torch.nn.Module, X=None, labels=None, out_dir: str | Path = "analysis", *,
                  bipartitions: dict[str, Sequence[int | str]] | None = None, tracker: EntanglementTracker | None = None,
                  label_name: str = "label", seed: int = 0, tsne_max_iter: int = 1000) -> dict[str, Any]:
    """Entanglement and latent-space analysis of a trained model.

    Parameters
    ----------
    model : a descriptor model (:mod:`entangle.models.descriptor_tn` or a baseline).
    X : optional descriptors ``(n, *dims)`` for the latent-space t-SNE (TTN, MERA, dense NN).
    labels : optional ``(n,)`` array colouring the t-SNE points (e.g. the target or space group).
    out_dir : directory for the PNGs and ``summary.json``.
    bipartitions : name -> subsystem ``A`` (index names or positions); default: ``{alpha1
        alpha2 | n1 n2 l}`` and ``{alpha1 n1 | alpha2 n2 l}`` for power-spectrum indices.
    tracker : optional :class:`EntanglementTracker` of the training; adds capacity and KL curves.
    seed, tsne_max_iter : t-SNE seed and iterations.

    Returns
    -------
    The summary written to ``out_dir/summary.json``: per bipartition the entropy, Page entropy,
    capacity, spectrum and spacing-ratio statistics; bond entropies of MPS-like models; files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = getattr(model, "config", None)
    summary: dict[str, Any] = {
        "model_class": type(model).__name__,
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else None,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "files": [],
    }
    files: list[Path] = []
    if hasattr(model, "state_tensor"):
        state, names = model_state(model)
        cuts = (default_bipartitions(names) if bipartitions is None
                else {label: resolve_subsystem(sub, names) for label, sub in bipartitions.items()})
        summary["state_shape"] = list(state.shape)
        summary["bipartitions"] = {}
        ratios = {}
        for label, legs in cuts.items():
            s = schmidt_values(state, legs)
            d_a = math.prod(state.shape[k] for k in legs)
            stats = spectrum_statistics(s, d_a, state.numel() // d_a)
            stats["subsystem"] = [names[k] for k in legs]
            summary["bipartitions"][label] = stats
            p = np.asarray(stats["spectrum"])
            m, n = sorted((stats["d_A"], stats["d_B"]))
            files.append(plot_spectrum({label: p}, out / f"spectrum_{_slug(label)}.png", d_a=m, d_b=n,
                                       title=f"{type(model).__name__}: {label}"))
            ratios[label] = level_spacing_ratios(p)
        if any(r.size for r in ratios.values()):
            files.append(plot_ratio_distribution({k: v for k, v in ratios.items() if v.size}, out / "spacing_ratios.png",
                                                 title=f"{type(model).__name__}: entanglement spectrum statistics"))
        labels_cut = list(summary["bipartitions"])
        files.append(plot_bond_entropies([summary["bipartitions"][k]["entropy"] for k in labels_cut],
                                         out / "bipartition_entropies.png", labels=labels_cut,
                                         title="entropy (Page: " + ", ".join(
                                             f"{summary['bipartitions'][k]['page_entropy']:.2f}" for k in labels_cut) + ")"))
    if hasattr(model, "bond_entropies"):
        bond = model.bond_entropies().cpu().numpy()
        summary["bond_entropies"] = bond.tolist()
        bond_labels = _bond_labels(model) if bond.size == len(model.config.index_names) - 1 else None
        files.append(plot_bond_entropies(bond, out / "bond_entropies.png", labels=bond_labels,
                                         title=f"{type(model).__name__}: entropy per bond"))
    if X is not None and hasattr(model, "hidden_states"):
        reps, level_names = hidden_representations(model, X)
        if labels is not None and np.asarray(labels).shape[0] != reps[0].shape[0]:
            raise ShapeError(f"labels must have one entry per structure ({reps[0].shape[0]}), "
                             f"got {np.asarray(labels).shape[0]}")
        perplexity = default_perplexity(reps[0].shape[0])
        embeddings = tsne_embeddings(reps, perplexity=perplexity, seed=seed, max_iter=tsne_max_iter)
        files.append(plot_latent(embeddings, out / "latent_tsne.png", labels=labels, titles=level_names,
                                 label_name=label_name))
        summary["latent"] = {"levels": level_names, "features": [int(r.shape[1]) for r in reps],
                             "perplexity": perplexity}
    if tracker is not None and tracker.records:
        summary["training"] = {}
        for label in tracker.bipartitions or {}:
            traj = tracker.summary(label)
            summary["training"][label] = {k: traj[k] for k in ("epochs", "entropy_mean", "capacity_mean",
                                                                  "kl_to_goe", "mean_min_ratio", "n_runs")}
            files.append(plot_capacity(traj["epochs"], traj["capacity_mean"], out / f"capacity_{_slug(label)}.png",
                                       kl=traj["kl_to_goe"], title=label))
            first, last = traj["epochs"][0], traj["epochs"][-1]
            pooled = {f"epoch {e}": tracker.pooled_ratios(label, e) for e in (first, last)}
            if all(v.size for v in pooled.values()):
                files.append(plot_ratio_distribution(pooled, out / f"training_ratios_{_slug(label)}.png", title=label))
            summary["training"][label]["final_mean_min_ratio"] = float(min_ratio(pooled[f"epoch {last}"]).mean()) \
                if pooled[f"epoch {last}"].size else None
    summary["files"] = [p.name for p in files]
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True))
    return summary

"""PNG figures: entanglement analysis, parity plots and learning curves (matplotlib, Agg
backend; no display needed).

Every function writes one PNG to ``path`` atomically and returns that path.
"""

from __future__ import annotations

import io as _io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)
import numpy as np  # noqa: E402

from entangle import io  # noqa: E402
from entangle.analysis.entanglement import (  # noqa: E402
    marchenko_pastur_edges, marchenko_pastur_pdf, min_ratio, poisson_ratio_pdf, wigner_dyson_ratio_pdf,
)

__all__ = ["plot_entropy_vs_bond", "plot_bond_entropies", "plot_ratio_distribution", "plot_spectrum",
           "plot_capacity", "plot_latent", "plot_parity", "plot_learning_curve"]


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    io.atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_parity(panels: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
                path: str | Path, title: str = "") -> Path:
    """Predicted against reference values, one panel per quantity and one colour per series.

    ``panels`` maps a panel's axis label (quantity and units, e.g. ``"energy (meV/atom)"``) to
    ``{series label: (reference, predicted)}`` arrays of equal length.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
    for ax, (quantity, series) in zip(axes[0], panels.items()):
        low, high = np.inf, -np.inf
        for label, (reference, prediction) in series.items():
            ax.scatter(reference, prediction, s=6, alpha=0.6, label=label)
            low = min(low, float(np.min(reference)), float(np.min(prediction)))
            high = max(high, float(np.max(reference)), float(np.max(prediction)))
        ax.plot([low, high], [low, high], "k--", lw=0.8)
        ax.set_xlabel(f"reference {quantity}")
        ax.set_ylabel(f"predicted {quantity}")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_learning_curve(history: Sequence[Mapping[str, float | None]], path: str | Path,
                        keys: Sequence[str] = ("train_loss", "val_loss"), title: str = "") -> Path:
    """Loss (log scale) against the optimisation step for each of ``keys`` in the records
    of ``history`` (records without a key are skipped)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key in keys:
        points = [(r["step"], r[key]) for r in history if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_entropy_vs_bond(bond_dims: Sequence[int], entropies: Mapping[str, Sequence[float]], path: str | Path,
                         errors: Mapping[str, Sequence[float]] | None = None, page: float | None = None,
                         title: str = "") -> Path:
    """Entanglement entropy against the virtual bond dimension, one line per model or
    bipartition (Fig. 14c,d); ``page`` draws the Page entropy as a horizontal line."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, values in entropies.items():
        err = None if errors is None else errors.get(label)
        ax.errorbar(list(bond_dims), list(values), yerr=err, marker="o", capsize=3, label=label)
    if page is not None:
        ax.axhline(page, color="red", lw=1.5, label="Page entropy")
    ax.set_xlabel("bond dimension χ")
    ax.set_ylabel("entanglement entropy S (nats)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_bond_entropies(entropies: Sequence[float], path: str | Path, labels: Sequence[str] | None = None,
                        title: str = "") -> Path:
    """Entropy at every bond of one MPS-like model (bonds labelled by the cut)."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    positions = np.arange(len(entropies))
    ax.bar(positions, list(entropies), color="tab:blue")
    if labels is not None:
        ax.set_xticks(positions, list(labels), rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("bond")
    ax.set_ylabel("S (nats)")
    ax.set_title(title)
    return _save(fig, path)


def plot_ratio_distribution(ratios: np.ndarray | Mapping[str, np.ndarray], path: str | Path, bins: int = 20,
                            title: str = "") -> Path:
    """Histogram of ``r~ = min(r, 1/r)`` against the Wigner–Dyson surmise (beta 1 and 2) and
    Poisson statistics (Fig. 15d–f). ``ratios`` is one array or a mapping label -> array."""
    groups = ratios if isinstance(ratios, Mapping) else {"observed": ratios}
    fig, ax = plt.subplots(figsize=(5, 3.6))
    edges = np.linspace(0.0, 1.0, bins + 1)
    for label, values in groups.items():
        rt = min_ratio(np.asarray(values))
        if rt.size:
            ax.hist(rt, bins=edges, density=True, histtype="step", lw=1.5, label=f"{label} (n={rt.size})")
    grid = np.linspace(0.0, 1.0, 201)
    ax.plot(grid, 2 * wigner_dyson_ratio_pdf(grid, 1), "k-", label="GOE surmise (β=1)")
    ax.plot(grid, 2 * wigner_dyson_ratio_pdf(grid, 2), "k--", label="GUE surmise (β=2)")
    ax.plot(grid, 2 * poisson_ratio_pdf(grid), "k:", label="Poisson")
    ax.set_xlabel("r̃ = min(r, 1/r)")
    ax.set_ylabel("P(r̃)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_spectrum(spectra: Mapping[str, np.ndarray], path: str | Path, d_a: int | None = None,
                  d_b: int | None = None, title: str = "") -> Path:
    """Left: ``xi_k = -ln p_k`` against ``k`` for each spectrum (Fig. 15a–c). Right: histogram of
    ``d_A p_k`` against the Marchenko–Pastur law when ``d_a <= d_b`` are given."""
    with_mp = d_a is not None and d_b is not None
    fig, axes = plt.subplots(1, 2 if with_mp else 1, figsize=(9 if with_mp else 5, 3.6), squeeze=False)
    ax = axes[0, 0]
    for label, p in spectra.items():
        p = np.asarray(p, dtype=np.float64)
        p = p[p > 0]
        ax.plot(np.arange(p.size), -np.log(p), ".-", ms=3, label=label)
    ax.set_xlabel("k")
    ax.set_ylabel("ξ_k = −ln λ_k²")
    ax.legend(fontsize=7)
    if with_mp:
        m, n = sorted((d_a, d_b))
        ax = axes[0, 1]
        for label, p in spectra.items():
            ax.hist(m * np.asarray(p, dtype=np.float64), bins=30, density=True, histtype="step", label=label)
        lo, hi = marchenko_pastur_edges(m / n)
        grid = np.linspace(lo, hi, 300)
        ax.plot(grid, marchenko_pastur_pdf(grid, m / n), "k-", label="Marchenko–Pastur")
        ax.set_xlabel("d_A λ²")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def plot_capacity(epochs: Sequence[int], capacity: Sequence[float], path: str | Path,
                  kl: Sequence[float] | None = None, title: str = "") -> Path:
    """Capacity of entanglement during training (Fig. 15 insets), with the KL divergence of the
    spacing ratios to GOE on a second axis when given."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(list(epochs), list(capacity), color="tab:blue", label="C_E")
    ax.set_xlabel("epoch")
    ax.set_ylabel("capacity of entanglement C_E", color="tab:blue")
    if kl is not None:
        twin = ax.twinx()
        values = [np.nan if v is None else v for v in kl]
        twin.plot(list(epochs), values, color="tab:red", label="D_KL(GOE || obs)")
        twin.set_ylabel("D_KL(GOE || obs)", color="tab:red")
    ax.set_title(title)
    return _save(fig, path)


def plot_latent(embeddings: Sequence[np.ndarray], path: str | Path, labels: np.ndarray | None = None,
                titles: Sequence[str] | None = None, label_name: str = "label") -> Path:
    """2-D embeddings (e.g. t-SNE of successive hidden layers, Fig. 16), one panel each, points
    coloured by ``labels`` (numeric: colour bar; otherwise one colour per category)."""
    n = len(embeddings)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
    numeric = labels is not None and np.issubdtype(np.asarray(labels).dtype, np.number)
    for k, (ax, emb) in enumerate(zip(axes[0], embeddings)):
        emb = np.asarray(emb)
        if labels is None:
            ax.scatter(emb[:, 0], emb[:, 1], s=6)
        elif numeric:
            sc = ax.scatter(emb[:, 0], emb[:, 1], s=6, c=np.asarray(labels, dtype=np.float64), cmap="viridis")
            if k == n - 1:
                fig.colorbar(sc, ax=ax, label=label_name)
        else:
            cats = np.asarray(labels).astype(str)
            for cat in np.unique(cats):
                sel = cats == cat
                ax.scatter(emb[sel, 0], emb[sel, 1], s=6, label=cat)
            if k == n - 1:
                ax.legend(fontsize=6, markerscale=2)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[k], fontsize=9)
    return _save(fig, path)

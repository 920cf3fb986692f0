"""Entanglement of trained descriptor models (Sommer & Dunham, Sec. IV B).

A model is viewed as a state ``|psi(w)>`` with one leg per descriptor index (its weight tensor;
for an MPO the Choi vector ``|T>`` with legs ``d_k**2``, Fig. 13). For a bipartition ``A|B`` of
the legs — contiguous or not — the Schmidt values ``lambda_k`` are the singular values of the
state reshaped to a ``(d_A, d_B)`` matrix after moving the ``A`` legs to the front (eq. 25). From
the normalised spectrum ``p_k = lambda_k^2 / sum lambda^2`` follow

* the von Neumann entropy ``S = -sum p ln p`` (eq. 23),
* the capacity of entanglement ``C_E = <H^2> - <H>^2`` with ``H = -ln rho_A`` (eq. 28),
* the level-spacing ratios ``r_k = s_k / s_{k+1}`` of the descending spectrum,
  ``s_k = p_k - p_{k+1}``, and ``r~ = min(r, 1/r)``, to be compared with the Wigner–Dyson
  surmise (eq. 27; Atas, Bogomolny, Giraud & Roux, PRL 110, 084101 (2013)) and Poisson statistics,

and, for reference, the Page entropy of a Haar-random state (eq. 26) and the Marchenko–Pastur law
of its spectrum. :class:`EntanglementTracker` records these during training over many runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import integrate
from scipy.special import digamma

from entangle.errors import ConfigError, ShapeError

__all__ = [
    "resolve_subsystem", "bipartition_label", "default_bipartitions", "schmidt_values", "model_state",
    "model_schmidt_values", "entanglement_spectrum", "entropy", "capacity_of_entanglement", "page_entropy",
    "level_spacing_ratios", "min_ratio", "wigner_dyson_ratio_pdf", "wigner_dyson_min_ratio_mean",
    "poisson_ratio_pdf", "ratio_bin_probabilities", "kl_divergence_to_wigner_dyson",
    "marchenko_pastur_pdf", "marchenko_pastur_edges", "spectrum_statistics", "EntanglementTracker",
    "kl_divergence_to_reference", "poisson_min_ratio_mean", "marchenko_pastur_ks", "compression_threshold",
]

# Normalisation of the Wigner–Dyson ratio surmise P(r) = (r + r^2)^b / (Z_b (1 + r + r^2)^(1 + 3b/2)).
_WD_NORMALISATION = {1: 8.0 / 27.0, 2: 4.0 * math.pi / (81.0 * math.sqrt(3.0)), 4: 4.0 * math.pi / (729.0 * math.sqrt(3.0))}


# ------------------------------------------------------------------------------- bipartitions
def resolve_subsystem(subsystem: Sequence[int | str], names: Sequence[str]) -> list[int]:
    """Leg positions of subsystem ``A`` given by index names (e.g. ``["alpha1", "n1"]``) or
    positions. ``A`` must be a non-empty proper subset of the legs."""
    n = len(names)
    legs = []
    for item in subsystem:
        if isinstance(item, str):
            if item not in names:
                raise ConfigError(f"unknown index {item!r}; the legs are {list(names)}")
            legs.append(list(names).index(item))
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool) and 0 <= item < n:
            legs.append(int(item))
        else:
            raise ConfigError(f"subsystem entries must be index names or positions in [0, {n}), got {item!r}")
    if len(set(legs)) != len(legs) or not 0 < len(legs) < n:
        raise ConfigError(f"subsystem must be a non-empty proper subset of {n} distinct legs, got {list(subsystem)}")
    return sorted(legs)


def bipartition_label(subsystem: Sequence[int], names: Sequence[str]) -> str:
    """``"alpha1 n1 | alpha2 n2 l"``."""
    rest = [k for k in range(len(names)) if k not in subsystem]
    return " ".join(names[k] for k in subsystem) + " | " + " ".join(names[k] for k in rest)


def default_bipartitions(names: Sequence[str]) -> dict[str, list[int]]:
    """The two bipartitions of Fig. 14 for power-spectrum indices (chemical ``{alpha1 alpha2}``
    vs structural, and the non-contiguous ``{alpha1 n1}`` vs the rest); otherwise the cut after
    the first half of the legs."""
    names = list(names)
    cuts = []
    if {"alpha1", "alpha2", "n1"} <= set(names) and len(names) > 3:
        cuts = [resolve_subsystem(["alpha1", "alpha2"], names), resolve_subsystem(["alpha1", "n1"], names)]
    elif len(names) >= 2:
        cuts = [list(range(len(names) // 2))]
    return {bipartition_label(c, names): c for c in cuts}


def schmidt_values(state: torch.Tensor, subsystem: Sequence[int]) -> torch.Tensor:
    """Schmidt values (singular values, descending) of a dense state across ``A|B``.

    Parameters
    ----------
    state : dense tensor ``(d_1, ..., d_N)``
    subsystem : leg positions of ``A`` (any subset, contiguous or not)

    Returns
    -------
    (min(d_A, d_B),) float64 tensor
    """
    legs = list(subsystem)
    if not legs or len(set(legs)) != len(legs) or any(not 0 <= k < state.dim() for k in legs) or len(legs) >= state.dim():
        raise ShapeError(f"subsystem {legs} is not a proper subset of the {state.dim()} legs")
    rest = [k for k in range(state.dim()) if k not in legs]
    d_a = math.prod(state.shape[k] for k in legs)
    matrix = state.permute(legs + rest).reshape(d_a, -1).to(torch.float64)  # [d_A, d_B]
    return torch.linalg.svdvals(matrix)


def model_state(model: torch.nn.Module) -> tuple[torch.Tensor, list[str]]:
    """Dense learned state of a descriptor model and the names of its legs.

    Models with a dense weight state (MPS, TTN, MERA, dense tensor) give ``(*dims)``; an MPO gives
    its Choi vector ``(d_1**2, ..., d_N**2)``. Raises :class:`ConfigError` for models without one.
    """
    if not hasattr(model, "state_tensor"):
        raise ConfigError(f"{type(model).__name__} has no tensor-network state to analyse")
    return model.state_tensor(), list(model.config.index_names)


def model_schmidt_values(model: torch.nn.Module, subsystem: Sequence[int | str]) -> torch.Tensor:
    """Schmidt values of a model's state across the bipartition ``subsystem | rest``."""
    state, names = model_state(model)
    return schmidt_values(state, resolve_subsystem(subsystem, names))


# -------------------------------------------------------------------------------- spectra
def entanglement_spectrum(singular_values: torch.Tensor | np.ndarray) -> np.ndarray:
    """Normalised spectrum of ``rho_A``: ``p_k = lambda_k^2 / sum lambda^2``, descending, float64."""
    s = np.asarray(torch.as_tensor(singular_values).detach().cpu(), dtype=np.float64)
    p = np.sort(s**2)[::-1]
    total = p.sum()
    if not total > 0:
        raise ConfigError("the state is zero; its entanglement spectrum is undefined")
    return p / total


def entropy(singular_values: torch.Tensor | np.ndarray) -> float:
    """Von Neumann entropy ``-sum p ln p`` in nats (eq. 23)."""
    p = entanglement_spectrum(singular_values)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def capacity_of_entanglement(singular_values: torch.Tensor | np.ndarray) -> float:
    """Capacity of entanglement ``C_E = sum p (ln p)^2 - (sum p ln p)^2`` (eq. 28): the variance
    of the entanglement Hamiltonian ``H = -ln rho_A``."""
    p = entanglement_spectrum(singular_values)
    p = p[p > 0]
    h = -np.log(p)
    return float((p * h**2).sum() - (p * h).sum() ** 2)


def page_entropy(d_a: int, d_b: int) -> float:
    """Average entanglement entropy (nats) of a Haar-random pure state in ``C^{d_a} ⊗ C^{d_b}``
    (Page 1993, eq. 26): ``sum_{k=n+1}^{m n} 1/k - (m - 1)/(2 n)`` with ``m = min, n = max``."""
    if not all(isinstance(d, (int, np.integer)) and d >= 1 for d in (d_a, d_b)):
        raise ConfigError(f"dimensions must be integers >= 1, got {d_a}, {d_b}")
    m, n = sorted((int(d_a), int(d_b)))
    harmonic = float(digamma(m * n + 1) - digamma(n + 1))  # sum_{k=n+1}^{mn} 1/k
    return harmonic - (m - 1) / (2.0 * n)


# ---------------------------------------------------------------------- level-spacing statistics
def level_spacing_ratios(levels: np.ndarray | torch.Tensor, tol: float = 1e-12) -> np.ndarray:
    """Ratios ``r_k = s_k / s_{k+1}`` of consecutive spacings of the levels sorted descending.

    Levels below ``tol * max|level|`` are dropped first (the exact zeros of a rank-deficient
    spectrum are not levels); ratios ``0/0`` of degenerate triples are dropped (their count is
    ``len(levels) - 2 - len(result)`` minus the dropped levels).
    """
    lv = np.sort(np.asarray(torch.as_tensor(levels).detach().cpu(), dtype=np.float64).ravel())[::-1]
    if lv.size and tol > 0:
        lv = lv[np.abs(lv) > tol * np.abs(lv).max()]
    spacings = lv[:-1] - lv[1:]  # >= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        r = spacings[:-1] / spacings[1:]
    return r[~np.isnan(r)]


def min_ratio(r: np.ndarray) -> np.ndarray:
    """``r~ = min(r, 1/r)`` in [0, 1]."""
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.minimum(r, 1.0 / r)


def wigner_dyson_ratio_pdf(r: np.ndarray | float, beta: int = 1) -> np.ndarray:
    """Wigner–Dyson surmise for the spacing ratio (eq. 27), ``beta`` = 1 (GOE), 2 (GUE), 4 (GSE)."""
    if beta not in _WD_NORMALISATION:
        raise ConfigError(f"beta must be 1, 2 or 4, got {beta}")
    r = np.asarray(r, dtype=np.float64)
    return (r + r * r) ** beta / (_WD_NORMALISATION[beta] * (1.0 + r + r * r) ** (1.0 + 1.5 * beta))


def poisson_ratio_pdf(r: np.ndarray | float) -> np.ndarray:
    """Spacing-ratio density of uncorrelated (Poisson) levels, ``1 / (1 + r)^2``."""
    r = np.asarray(r, dtype=np.float64)
    return 1.0 / (1.0 + r) ** 2


def wigner_dyson_min_ratio_mean(beta: int = 1) -> float:
    """``<r~>`` under the surmise (``4 - 2 sqrt 3 = 0.5359`` for GOE), by quadrature of
    ``2 r P(r)`` on [0, 1] (``r~`` has density ``2 P(r~)`` there since ``P(r) = P(1/r)/r^2``)."""
    return float(integrate.quad(lambda r: 2.0 * r * wigner_dyson_ratio_pdf(r, beta), 0.0, 1.0)[0])


def ratio_bin_probabilities(edges: np.ndarray, kind: str = "goe") -> np.ndarray:
    """Probability of ``r~`` in each bin ``[edges[i], edges[i+1]]`` (``0 <= edges <= 1``) under
    ``kind`` = ``"goe"`` (beta 1), ``"gue"`` (beta 2) or ``"poisson"``."""
    pdf = {"goe": lambda r: wigner_dyson_ratio_pdf(r, 1), "gue": lambda r: wigner_dyson_ratio_pdf(r, 2),
           "poisson": poisson_ratio_pdf}.get(kind)
    if pdf is None:
        raise ConfigError(f"kind must be 'goe', 'gue' or 'poisson', got {kind!r}")
    return np.array([2.0 * integrate.quad(pdf, a, b)[0] for a, b in zip(edges[:-1], edges[1:])])


def kl_divergence_to_wigner_dyson(ratios: np.ndarray, bins: int = 20, beta: int = 1, pseudocount: float = 0.5) -> float:
    """``D_KL(P_WD || P_obs) = sum_bins P_WD ln(P_WD / P_obs)`` over ``r~`` in [0, 1] (Sec. IV B).

    ``ratios`` are raw ``r`` (converted to ``r~``) or already ``r~``. ``P_obs`` is the histogram
    with ``pseudocount`` added to every bin (an empty bin would make the divergence infinite).
    """
    if beta not in (1, 2):
        raise ConfigError(f"beta must be 1 (GOE) or 2 (GUE), got {beta}")
    return kl_divergence_to_reference(ratios, "goe" if beta == 1 else "gue", bins, pseudocount)


def marchenko_pastur_edges(ratio: float) -> tuple[float, float]:
    """Support ``[(1 - sqrt c)^2, (1 + sqrt c)^2]`` of the Marchenko–Pastur law, ``c = d_A / d_B <= 1``."""
    if not 0 < ratio <= 1:
        raise ConfigError(f"ratio d_A/d_B must be in (0, 1], got {ratio}")
    return (1.0 - math.sqrt(ratio)) ** 2, (1.0 + math.sqrt(ratio)) ** 2


def marchenko_pastur_pdf(x: np.ndarray | float, ratio: float) -> np.ndarray:
    """Marchenko–Pastur density of ``x = d_A p`` for the eigenvalues ``p`` of ``rho_A`` of a
    random state with ``c = d_A / d_B <= 1``: ``sqrt((x+ - x)(x - x-)) / (2 pi c x)`` (mean 1)."""
    lo, hi = marchenko_pastur_edges(ratio)
    x = np.asarray(x, dtype=np.float64)
    inside = (x > lo) & (x < hi)
    safe = np.where(inside, x, 1.0)
    return np.where(inside, np.sqrt(np.clip((hi - safe) * (safe - lo), 0, None)) / (2 * math.pi * ratio * safe), 0.0)


def spectrum_statistics(singular_values: torch.Tensor | np.ndarray, d_a: int, d_b: int) -> dict[str, Any]:
    """Entropy, capacity, Page entropy, ratio statistics and the spectrum of one bipartition."""
    p = entanglement_spectrum(singular_values)
    r = level_spacing_ratios(p)
    stats = {
        "d_A": int(d_a), "d_B": int(d_b), "entropy": entropy(singular_values),
        "page_entropy": page_entropy(d_a, d_b), "max_entropy": math.log(min(d_a, d_b)),
        "capacity": capacity_of_entanglement(singular_values), "spectrum": p.tolist(),
        "n_ratios": int(r.size),
        "mean_min_ratio": float(min_ratio(r).mean()) if r.size else None,
        "kl_to_goe": kl_divergence_to_wigner_dyson(r) if r.size else None,
    }
    return stats


# ------------------------------------------------------------------------------------ tracker
class EntanglementTracker:
    """Record entanglement diagnostics of a model during training, over many runs.

    Use as the ``callback`` of :func:`entangle.models.descriptor_tn.fit_model`::

        tracker = EntanglementTracker({"alpha n": ["alpha1", "n1"]})
        for run in range(100):
            tracker.start_run(run)
            fit_model(make_model(seed=run), x, y, callback=tracker)
        summary = tracker.summary("alpha n")

    Parameters
    ----------
    bipartitions : name -> subsystem ``A`` (index names or positions); default
        :func:`default_bipartitions` of the first model seen.
    every : record every ``every``-th epoch (epoch 0 always).
    """

    def __init__(self, bipartitions: dict[str, Sequence[int | str]] | None = None, every: int = 1):
        if not isinstance(every, int) or every < 1:
            raise ConfigError(f"every must be an integer >= 1, got {every!r}")
        self.bipartitions = None if bipartitions is None else dict(bipartitions)
        self.every = every
        self.run = 0
        self.records: list[dict[str, Any]] = []

    def start_run(self, run: int | None = None) -> None:
        """Begin a new run (default: the next integer)."""
        self.run = self.run + 1 if run is None else int(run)

    def __call__(self, model: torch.nn.Module, epoch: int) -> None:
        if epoch % self.every:
            return
        state, names = model_state(model)
        if self.bipartitions is None:
            self.bipartitions = {k: v for k, v in default_bipartitions(names).items()}
        for label, subsystem in self.bipartitions.items():
            legs = resolve_subsystem(subsystem, names)
            s = schmidt_values(state, legs)
            p = entanglement_spectrum(s)
            self.records.append({
                "run": self.run, "epoch": int(epoch), "bipartition": label, "entropy": entropy(s),
                "capacity": capacity_of_entanglement(s), "spectrum": p, "ratios": level_spacing_ratios(p),
            })

    def _select(self, bipartition: str) -> list[dict[str, Any]]:
        rows = [r for r in self.records if r["bipartition"] == bipartition]
        if not rows:
            raise ConfigError(f"no records for bipartition {bipartition!r}; known: "
                              f"{sorted({r['bipartition'] for r in self.records})}")
        return rows

    def summary(self, bipartition: str, bins: int = 20) -> dict[str, Any]:
        """Per recorded epoch, over runs: mean/std entropy and capacity, mean ``xi_k = -ln p_k``
        (over the common spectrum length), the KL divergence of the pooled ratios to GOE and
        their mean ``r~``."""
        rows = self._select(bipartition)
        epochs = sorted({r["epoch"] for r in rows})
        out: dict[str, Any] = {"epochs": epochs, "entropy_mean": [], "entropy_std": [], "capacity_mean": [],
                               "capacity_std": [], "mean_log_spectrum": [], "kl_to_goe": [], "mean_min_ratio": [],
                               "n_runs": []}
        for epoch in epochs:
            at = [r for r in rows if r["epoch"] == epoch]
            ent = np.array([r["entropy"] for r in at])
            cap = np.array([r["capacity"] for r in at])
            length = min(len(r["spectrum"]) for r in at)
            with np.errstate(divide="ignore"):
                xi = np.mean([-np.log(r["spectrum"][:length]) for r in at], axis=0)
            pooled = np.concatenate([r["ratios"] for r in at])
            out["entropy_mean"].append(float(ent.mean()))
            out["entropy_std"].append(float(ent.std()))
            out["capacity_mean"].append(float(cap.mean()))
            out["capacity_std"].append(float(cap.std()))
            out["mean_log_spectrum"].append(xi.tolist())
            out["kl_to_goe"].append(kl_divergence_to_wigner_dyson(pooled, bins) if pooled.size else None)
            out["mean_min_ratio"].append(float(min_ratio(pooled).mean()) if pooled.size else None)
            out["n_runs"].append(len(at))
        return out

    def pooled_ratios(self, bipartition: str, epoch: int) -> np.ndarray:
        """All ratios ``r`` recorded at ``epoch`` over the runs."""
        rows = [r for r in self._select(bipartition) if r["epoch"] == epoch]
        return np.concatenate([r["ratios"] for r in rows]) if rows else np.zeros(0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable records."""
        return {"bipartitions": {k: list(v) for k, v in (self.bipartitions or {}).items()},
                "every": self.every,
                "records": [{**r, "spectrum": np.asarray(r["spectrum"]).tolist(),
                             "ratios": np.asarray(r["ratios"]).tolist()} for r in self.records]}


# ------------------------------------------------------------- references and bond-dimension studies
def kl_divergence_to_reference(ratios: np.ndarray, kind: str = "goe", bins: int = 20, pseudocount: float = 0.5
                               ) -> float:
    """``D_KL(P_ref || P_obs)`` over binned ``r~`` in [0, 1] for ``kind`` = ``"goe"``, ``"gue"`` or
    ``"poisson"`` (same histogram and pseudocount as :func:`kl_divergence_to_wigner_dyson`)."""
    rt = min_ratio(np.asarray(ratios))
    if rt.size == 0:
        raise ConfigError("no level-spacing ratios to compare")
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.histogram(rt, bins=edges)[0].astype(np.float64) + pseudocount
    observed = counts / counts.sum()
    expected = ratio_bin_probabilities(edges, kind)
    expected = expected / expected.sum()
    return float((expected * np.log(expected / observed)).sum())


def poisson_min_ratio_mean() -> float:
    """``<r~>`` of uncorrelated levels, ``2 ln 2 - 1 = 0.3863``."""
    return 2.0 * math.log(2.0) - 1.0


def marchenko_pastur_ks(spectrum: np.ndarray | torch.Tensor, d_a: int, d_b: int) -> float:
    """Kolmogorov–Smirnov distance between the empirical distribution of ``x = m p_k``
    (``p``: normalised spectrum, ``m = min(d_a, d_b)``; its zeros beyond the rank count as
    ``x = 0``) and the Marchenko–Pastur law of ratio ``c = m / max(d_a, d_b)`` (0 for a
    Haar-random state in the limit of large ``m``, 1 for a product state)."""
    m, n = sorted((int(d_a), int(d_b)))
    p = np.sort(np.asarray(torch.as_tensor(spectrum).detach().cpu(), dtype=np.float64).ravel())
    x = np.concatenate([np.zeros(max(m - p.size, 0)), m * p / p.sum()])
    x = np.sort(x)
    ratio = m / n
    lo, hi = marchenko_pastur_edges(ratio)
    grid = np.linspace(lo, hi, 4001)
    pdf = marchenko_pastur_pdf(grid, ratio)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
    cdf = cdf / cdf[-1]
    model = np.interp(x, grid, cdf, left=0.0, right=1.0)
    k = np.arange(1, x.size + 1) / x.size
    return float(max(np.max(k - model), np.max(model - (k - 1.0 / x.size))))


def compression_threshold(bond_dims: Sequence[int], errors: Sequence[float], stds: Sequence[float] | None = None,
                          rel_tol: float = 0.02, n_std: float = 1.0) -> int:
    """Smallest bond dimension beyond which the error no longer improves.

    With ``best = min(errors)`` (at ``chi_best``) the tolerance is
    ``tol = max(rel_tol * best, n_std * stds[chi_best])`` (``stds``, e.g. over seeds, optional),
    and the threshold is the smallest ``chi`` with ``errors[chi] <= min_{chi' >= chi} errors[chi'] + tol``:
    no larger bond lowers the error by more than the tolerance (the seed-to-seed scatter, or
    ``rel_tol`` of the best error). A larger bond that is worse (overfitting) does not move it.
    Non-finite errors (failed fits) never qualify.
    """
    chis = np.asarray(list(bond_dims), dtype=np.int64)
    err = np.asarray(list(errors), dtype=np.float64)
    if chis.size == 0 or chis.size != err.size:
        raise ConfigError(f"need equally many bond dimensions and errors, got {chis.size} and {err.size}")
    if not np.all(np.diff(chis) > 0):
        raise ConfigError(f"bond dimensions must be strictly increasing, got {chis.tolist()}")
    if not rel_tol >= 0 or not n_std >= 0:
        raise ConfigError(f"rel_tol and n_std must be >= 0, got {rel_tol}, {n_std}")
    finite = np.isfinite(err)
    if not finite.any():
        raise ConfigError("no finite error")
    best_pos = int(np.nanargmin(np.where(finite, err, np.nan)))
    tol = rel_tol * err[best_pos]
    if stds is not None:
        sd = np.asarray(list(stds), dtype=np.float64)
        if sd.size != err.size:
            raise ConfigError(f"need one std per bond dimension, got {sd.size}")
        if np.isfinite(sd[best_pos]):
            tol = max(tol, n_std * sd[best_pos])
    filled = np.where(finite, err, np.inf)
    tail_min = np.minimum.accumulate(filled[::-1])[::-1]  # min over chi' >= chi
    ok = finite & (filled <= tail_min + tol)
    return int(chis[np.flatnonzero(ok)[0]])

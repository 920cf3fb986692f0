"""Latent spaces of trained hierarchical models (Sommer & Dunham, Sec. IV C, Fig. 16).

The hidden levels of a TTN or MERA (the outputs of each layer of isometries), or the hidden layers
of a dense network, map every structure to a vector; t-SNE (scikit-learn) embeds each level in
two dimensions so that the reorganisation of the data with depth can be seen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.manifold import TSNE

from entangle.errors import ConfigError

__all__ = ["hidden_representations", "tsne_embeddings", "default_perplexity"]


def hidden_representations(model: torch.nn.Module, x) -> tuple[list[np.ndarray], list[str]]:
    """The normalised input and every hidden level of ``model`` for descriptors ``x: (n, *dims)``.

    Returns
    -------
    representations : list of ``(n, features_k)`` float64 arrays, input first.
    names : ``["input", "level 1", ...]``.
    """
    if not hasattr(model, "hidden_states"):
        raise ConfigError(f"{type(model).__name__} has no hidden levels (use a TTN, MERA or dense NN)")
    xt = model.check_input(x)
    with torch.no_grad():
        inputs = model.normalize_inputs(xt).reshape(xt.shape[0], -1)
        hidden = model.hidden_states(xt)
    reps = [inputs, *hidden]
    arrays = [r.detach().cpu().numpy().astype(np.float64) for r in reps]
    return arrays, ["input"] + [f"level {k + 1}" for k in range(len(hidden))]


def default_perplexity(n_samples: int, perplexity: float = 30.0) -> float:
    """``perplexity``, lowered to ``(n_samples - 1) / 3`` for small data sets (t-SNE needs
    perplexity < n_samples)."""
    if n_samples < 4:
        raise ConfigError(f"t-SNE needs at least 4 samples, got {n_samples}")
    return float(min(perplexity, (n_samples - 1) / 3.0))


def tsne_embeddings(representations: Sequence[np.ndarray], perplexity: float = 30.0, seed: int = 0,
                    max_iter: int = 1000) -> list[np.ndarray]:
    """t-SNE of each representation ``(n, features)`` to ``(n, 2)`` (PCA initialisation, fixed seed)."""
    out = []
    for rep in representations:
        rep = np.asarray(rep, dtype=np.float64)
        if perplexity >= rep.shape[0]:
            raise ConfigError(f"perplexity {perplexity} must be smaller than the number of samples {rep.shape[0]}")
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max_iter)
        out.append(tsne.fit_transform(rep))
    return out

"""Entanglement spectra, entropies, level statistics, latent embeddings and plots of trained models.

Sommer & Dunham, Sec. IV B–C: bipartite entropies of the learned states for any split of the
descriptor indices, the Page entropy, entanglement-spectrum statistics (spacing ratios against the
Wigner–Dyson surmise and Poisson, KL divergence to GOE, capacity of entanglement,
Marchenko–Pastur law), tracked over training, and t-SNE of hidden levels.
"""

from entangle.analysis.entanglement import (
    EntanglementTracker, bipartition_label, capacity_of_entanglement, compression_threshold, default_bipartitions,
    entanglement_spectrum, entropy, kl_divergence_to_reference, kl_divergence_to_wigner_dyson, level_spacing_ratios,
    marchenko_pastur_edges, marchenko_pastur_ks, marchenko_pastur_pdf, min_ratio, model_schmidt_values, model_state,
    page_entropy, poisson_min_ratio_mean, poisson_ratio_pdf, ratio_bin_probabilities, resolve_subsystem,
    schmidt_values, spectrum_statistics, wigner_dyson_min_ratio_mean, wigner_dyson_ratio_pdf,
)
from entangle.analysis.latent import default_perplexity, hidden_representations, tsne_embeddings
from entangle.analysis.report import analyze_model

__all__ = [
    "analyze_model", "EntanglementTracker",
    "schmidt_values", "model_state", "model_schmidt_values", "resolve_subsystem", "bipartition_label",
    "default_bipartitions", "entanglement_spectrum", "entropy", "capacity_of_entanglement", "page_entropy",
    "level_spacing_ratios", "min_ratio", "wigner_dyson_ratio_pdf", "wigner_dyson_min_ratio_mean",
    "poisson_ratio_pdf", "ratio_bin_probabilities", "kl_divergence_to_wigner_dyson", "marchenko_pastur_pdf",
    "marchenko_pastur_edges", "spectrum_statistics", "kl_divergence_to_reference", "poisson_min_ratio_mean",
    "marchenko_pastur_ks", "compression_threshold",
    "hidden_representations", "tsne_embeddings", "default_perplexity",
]

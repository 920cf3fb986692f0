import math

import numpy as np
import pytest
import torch
from scipy import integrate

from entangle.analysis import (
    EntanglementTracker, capacity_of_entanglement, entanglement_spectrum, entropy, kl_divergence_to_wigner_dyson,
    level_spacing_ratios, marchenko_pastur_edges, marchenko_pastur_pdf, min_ratio, model_schmidt_values, page_entropy,
    poisson_ratio_pdf, ratio_bin_probabilities, resolve_subsystem, schmidt_values, wigner_dyson_min_ratio_mean,
    wigner_dyson_ratio_pdf,
)
from entangle.errors import ConfigError
from entangle.models.descriptor_tn import MPOConfig, MPORegressor, MPSConfig, MPSRegressor, fit_model

DIMS = [2, 3, 2, 3, 2]


# ------------------------------------------------------------------------------ Page entropy
@pytest.mark.parametrize("d_a, d_b", [(2, 2), (2, 5), (3, 4)])
def test_page_entropy_matches_monte_carlo_over_haar_states(d_a, d_b):
    rng = np.random.default_rng(0)
    n = 4000
    psi = rng.normal(size=(n, d_a, d_b)) + 1j * rng.normal(size=(n, d_a, d_b))  # Haar after normalisation
    s = np.linalg.svd(psi, compute_uv=False)
    p = s**2 / (s**2).sum(1, keepdims=True)
    ent = -(p * np.log(p)).sum(1)
    assert abs(ent.mean() - page_entropy(d_a, d_b)) < 4 * ent.std() / math.sqrt(n)


def test_page_entropy_limits():
    assert page_entropy(1, 7) == pytest.approx(0.0, abs=1e-14)
    assert page_entropy(3, 8) == page_entropy(8, 3)
    # Page: S -> ln m - m / (2 n) for 1 << m <= n
    assert page_entropy(200, 4000) == pytest.approx(math.log(200) - 200 / 8000, abs=1e-3)
    # exact small case: m = n = 2 gives 1/3 + 1/4 - 1/4 = 1/3
    assert page_entropy(2, 2) == pytest.approx(1 / 3, abs=1e-14)


# ------------------------------------------------------------------- spacing-ratio statistics
@pytest.mark.parametrize("beta", [1, 2, 4])
def test_wigner_dyson_surmise_is_normalised(beta):
    total = integrate.quad(lambda r: wigner_dyson_ratio_pdf(r, beta), 0, np.inf)[0]
    assert total == pytest.approx(1.0, abs=1e-9)


def test_surmise_means_and_poisson():
    assert wigner_dyson_min_ratio_mean(1) == pytest.approx(4 - 2 * math.sqrt(3), abs=1e-9)
    assert wigner_dyson_min_ratio_mean(2) == pytest.approx(2 * math.sqrt(3) / math.pi - 0.5, abs=1e-9)
    assert integrate.quad(poisson_ratio_pdf, 0, np.inf)[0] == pytest.approx(1.0, abs=1e-9)
    assert ratio_bin_probabilities(np.linspace(0, 1, 11), "goe").sum() == pytest.approx(1.0, abs=1e-9)
    assert ratio_bin_probabilities(np.linspace(0, 1, 11), "poisson").sum() == pytest.approx(1.0, abs=1e-9)
    # level repulsion: P_WD(r) ~ r^beta at small r
    assert wigner_dyson_ratio_pdf(1e-4, 1) / wigner_dyson_ratio_pdf(2e-4, 1) == pytest.approx(0.5, rel=1e-3)


def goe_eigenvalues(rng, n=100, count=25):
    levels = []
    for _ in range(count):
        a = rng.normal(size=(n, n))
        levels.append(np.linalg.eigvalsh((a + a.T) / 2))
    return levels


def test_sampled_goe_ratios_follow_the_surmise():
    rng = np.random.default_rng(3)
    ratios = np.concatenate([level_spacing_ratios(ev[15:-15]) for ev in goe_eigenvalues(rng)])  # spectral bulk
    # large-N GOE value <r~> = 0.5307 (Atas et al. 2013); the 3x3 surmise gives 0.5359
    assert min_ratio(ratios).mean() == pytest.approx(0.5307, abs=0.01)
    kl_goe = kl_divergence_to_wigner_dyson(ratios)
    poisson_levels = np.sort(rng.uniform(size=(20, 120)), axis=1)
    poisson_ratios = np.concatenate([level_spacing_ratios(lv) for lv in poisson_levels])
    assert min_ratio(poisson_ratios).mean() == pytest.approx(2 * math.log(2) - 1, abs=0.02)
    kl_poisson = kl_divergence_to_wigner_dyson(poisson_ratios)
    assert kl_goe < 0.02 and kl_poisson > 0.1


def test_level_spacing_ratios_definition():
    levels = np.array([10.0, 6.0, 5.0, 3.0, 0.0])  # spacings 4, 1, 2, 3 (zero level dropped)
    np.testing.assert_allclose(level_spacing_ratios(levels), [4.0, 0.5])
    np.testing.assert_allclose(level_spacing_ratios(levels, tol=0.0), [4.0, 0.5, 2 / 3])


# ---------------------------------------------------------------------- spectra and capacity
def test_capacity_of_entanglement_closed_forms():
    assert capacity_of_entanglement(np.ones(6)) == pytest.approx(0.0, abs=1e-14)  # flat spectrum
    q = 0.2
    s = np.sqrt([q, 1 - q])
    assert capacity_of_entanglement(s) == pytest.approx(q * (1 - q) * math.log(q / (1 - q)) ** 2, rel=1e-12)
    assert entropy(s) == pytest.approx(-q * math.log(q) - (1 - q) * math.log(1 - q), rel=1e-12)


def test_marchenko_pastur_law():
    c = 0.25
    lo, hi = marchenko_pastur_edges(c)
    assert integrate.quad(lambda x: marchenko_pastur_pdf(x, c), lo, hi)[0] == pytest.approx(1.0, abs=1e-6)
    assert integrate.quad(lambda x: x * marchenko_pastur_pdf(x, c), lo, hi)[0] == pytest.approx(1.0, abs=1e-6)
    # a random state's reduced density matrix follows it: second moment of x = d_A p is 1 + c
    rng = np.random.default_rng(0)
    d_a, d_b = 100, 400
    psi = rng.normal(size=(d_a, d_b))
    x = d_a * entanglement_spectrum(np.linalg.svd(psi, compute_uv=False))
    assert (x**2).mean() == pytest.approx(1 + c, abs=0.05)
    assert x.min() > lo - 0.1 and x.max() < hi + 0.1


# -------------------------------------------------------------------- bipartitions of models
def test_noncontiguous_bipartition_equals_mps_bond_after_reordering():
    # with site order alpha1 n1 alpha2 n2 l the cut {alpha1 n1} is the MPS bond 1; its Schmidt values
    # from canonical forms must equal the SVD of the permuted dense state
    model = MPSRegressor(MPSConfig(dims=DIMS, chi=3, site_order=[0, 2, 1, 3, 4], seed=2))
    dense = model_schmidt_values(model, ["alpha1", "n1"])  # d_A = 4 values, rank <= chi = 3
    canonical = model.to_mps().schmidt_values(1)
    assert dense.shape == (4,) and canonical.shape == (3,)
    torch.testing.assert_close(dense[:3], canonical, rtol=1e-10, atol=1e-12)
    assert float(dense[3]) < 1e-12
    # contiguous chemical cut of the default order is bond 1 as well
    model = MPSRegressor(MPSConfig(dims=DIMS, chi=4, seed=3))
    torch.testing.assert_close(model_schmidt_values(model, ["alpha1", "alpha2"])[:4],
                               model.to_mps().schmidt_values(1), rtol=1e-10, atol=1e-12)
    # explicit permute-and-SVD of the weight tensor
    w = model.weight_tensor().detach()
    ref = torch.linalg.svdvals(w.permute(0, 2, 1, 3, 4).reshape(4, -1))
    torch.testing.assert_close(model_schmidt_values(model, [2, 0]), ref)


def test_mpo_entanglement_through_the_choi_isomorphism():
    model = MPORegressor(MPOConfig(dims=DIMS, chi=3, site_order=[1, 0, 2, 3, 4], seed=1))
    t = model.operator_tensor().detach()  # (o1..o5, i1..i5) descriptor order
    # |T> with A = {alpha1, n1}: legs (o1, i1, o3, i3) against the rest
    ref = torch.linalg.svdvals(t.permute(0, 5, 2, 7, 1, 6, 3, 8, 4, 9).reshape(2 * 2 * 2 * 2, -1))
    torch.testing.assert_close(model_schmidt_values(model, ["alpha1", "n1"]), ref, rtol=1e-10, atol=1e-12)
    assert tuple(model.state_tensor().shape) == tuple(d * d for d in DIMS)


def test_schmidt_values_of_product_and_bell_states():
    product = torch.einsum("a,b,c->abc", *(torch.rand(k, dtype=torch.float64) for k in (2, 3, 2)))
    assert entropy(schmidt_values(product, [0, 2])) == pytest.approx(0.0, abs=1e-12)
    bell = torch.zeros(2, 3, 2, dtype=torch.float64)
    bell[0, 1, 0] = bell[1, 1, 1] = 1.0  # entangled between legs 0 and 2, leg 1 a product factor
    assert entropy(schmidt_values(bell, [0])) == pytest.approx(math.log(2), abs=1e-12)
    assert entropy(schmidt_values(bell, [1])) == pytest.approx(0.0, abs=1e-12)


def test_resolve_subsystem_errors():
    names = ["alpha1", "alpha2", "n1", "n2", "l"]
    assert resolve_subsystem(["n1", 0], names) == [0, 2]
    for bad in (["alpha3"], [], names, [0, 0], [7]):
        with pytest.raises(ConfigError):
            resolve_subsystem(bad, names)


# --------------------------------------------------------------------------------- tracker
def test_tracker_records_and_aggregates_runs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, *DIMS, generator=g, dtype=torch.float64)
    y = x.reshape(60, -1) @ torch.randn(72, generator=g, dtype=torch.float64)
    tracker = EntanglementTracker({"chem": ["alpha1", "alpha2"], "alpha n": ["alpha1", "n1"]}, every=2)
    models = []
    for run in range(2):
        tracker.start_run(run)
        model = MPSRegressor(MPSConfig(dims=DIMS, chi=6, seed=run))
        models.append(model)
        fit_model(model, x, y, epochs=6, patience=10, callback=tracker)
    summary = tracker.summary("alpha n")
    assert summary["epochs"] == [0, 2, 4] and summary["n_runs"] == [2, 2, 2]
    at4 = [r for r in tracker.records if r["bipartition"] == "alpha n" and r["epoch"] == 4]
    assert summary["entropy_mean"][2] == pytest.approx(np.mean([r["entropy"] for r in at4]))
    assert summary["capacity_mean"][2] == pytest.approx(np.mean([r["capacity"] for r in at4]))
    # a record is exactly the entropy of the model state it saw
    tracker.start_run(9)
    tracker(models[0], 0)
    rec = tracker.records[-1]
    assert rec["entropy"] == pytest.approx(entropy(model_schmidt_values(models[0], ["alpha1", "n1"])), rel=1e-12)
    assert tracker.to_dict()["records"][-1]["run"] == 9

"""Fast synthetic checks of the helpers behind the NOMAD2018 Figs. 14/15 benchmarks."""

import numpy as np
import pytest

from entangle.analysis import (
    compression_threshold, kl_divergence_to_reference, kl_divergence_to_wigner_dyson, marchenko_pastur_ks,
    min_ratio, poisson_min_ratio_mean,
)
from entangle.errors import ConfigError


def test_compression_threshold_plateau_and_tolerances():
    chis = [1, 2, 4, 8, 16, 32]
    errors = [10.0, 6.0, 4.0, 3.05, 3.0, 3.02]
    assert compression_threshold(chis, errors) == 8  # within 2 % of the best from chi = 8 on
    assert compression_threshold(chis, errors, rel_tol=0.0) == 16
    # one std (over seeds) at the best chi widens the tolerance
    assert compression_threshold(chis, errors, stds=[0, 0, 0, 0, 1.2, 0], rel_tol=0.0) == 4
    # a later, worse bond (overfitting) does not move the threshold
    assert compression_threshold(chis, [10.0, 6.0, 3.0, 3.0, 3.5, 4.0]) == 4
    # monotone improvement to the end: the last chi
    assert compression_threshold(chis, [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]) == 32
    # failed fits never qualify
    assert compression_threshold([1, 2, 4], [3.0, float("nan"), 3.0]) == 1
    assert compression_threshold([1, 2, 4], [5.0, 3.0, float("nan")]) == 2


def test_compression_threshold_rejects_bad_input():
    with pytest.raises(ConfigError):
        compression_threshold([4, 2], [1.0, 2.0])
    with pytest.raises(ConfigError):
        compression_threshold([1, 2], [1.0])
    with pytest.raises(ConfigError):
        compression_threshold([1, 2], [float("nan")] * 2)


def test_kl_to_references_separate_goe_and_poisson():
    rng = np.random.default_rng(0)
    ratios_goe, ratios_poisson = [], []
    for _ in range(200):
        a = rng.normal(size=(60, 60))
        levels = np.linalg.eigvalsh((a + a.T) / 2)[20:40]  # bulk of a GOE matrix
        s = np.diff(levels)
        ratios_goe.append(s[1:] / s[:-1])
        u = np.sort(rng.uniform(size=20))  # uncorrelated levels
        s = np.diff(u)
        ratios_poisson.append(s[1:] / s[:-1])
    goe, poisson = np.concatenate(ratios_goe), np.concatenate(ratios_poisson)
    assert kl_divergence_to_reference(goe, "goe") < 0.05 < kl_divergence_to_reference(goe, "poisson")
    assert kl_divergence_to_reference(poisson, "poisson") < 0.05 < kl_divergence_to_reference(poisson, "goe")
    assert kl_divergence_to_reference(goe, "goe") == pytest.approx(kl_divergence_to_wigner_dyson(goe))
    assert abs(min_ratio(poisson).mean() - poisson_min_ratio_mean()) < 0.02
    with pytest.raises(ConfigError):
        kl_divergence_to_reference(goe, "gse")


def test_marchenko_pastur_ks_random_vs_product_state():
    rng = np.random.default_rng(1)
    d_a, d_b = 64, 256
    psi = rng.normal(size=(d_a, d_b))
    p = np.linalg.svd(psi, compute_uv=False) ** 2
    assert marchenko_pastur_ks(p, d_a, d_b) < 0.1
    product = np.zeros(d_a)
    product[0] = 1.0
    assert marchenko_pastur_ks(product, d_a, d_b) > 0.9

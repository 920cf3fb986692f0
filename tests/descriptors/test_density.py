import math

import numpy as np
import pytest
import scipy.special
import torch

from entangle.data import AtomsBatch, neighbour_list
from entangle.descriptors import (
    ChebyshevBasis,
    GTOBasis,
    SphericalBesselBasis,
    covariant_features,
    cutoff_function,
    delta_density,
    gaussian_density,
    pad_neighbours,
    safe_distances,
)
from entangle.errors import ShapeError

SPECIES = {29: 0, 79: 1}


def real_ylm(vector: np.ndarray, l_max: int) -> np.ndarray:
    """Real harmonics (order l*l+l+m) built from scipy's complex Y_l^m, independent of so3."""
    x, y, z = vector / np.linalg.norm(vector)
    theta, phi = math.acos(max(-1.0, min(1.0, z))), math.atan2(y, x)
    out = np.zeros((l_max + 1) ** 2)
    for l in range(l_max + 1):
        for m in range(-l, l + 1):
            c = scipy.special.sph_harm_y(l, abs(m), theta, phi)
            if m > 0:
                value = math.sqrt(2) * (-1) ** m * c.real
            elif m < 0:
                value = math.sqrt(2) * (-1) ** m * c.imag
            else:
                value = c.real
            out[l * l + l + m] = value
    return out


def pairs_of(structure, cutoff):
    batch = AtomsBatch.from_structures([structure])
    pairs = neighbour_list(batch, cutoff=cutoff)
    species = torch.tensor([SPECIES[int(z)] for z in structure.numbers])
    i, j = pairs.centers.numpy(), pairs.neighbors.numpy()
    vectors = structure.positions[j] - structure.positions[i] + pairs.shifts.numpy() @ structure.cell
    return batch, pairs, species, vectors


@pytest.mark.parametrize("include_center", [False, True])
def test_padding_keeps_every_pair_once(triclinic, include_center):
    batch, pairs, species, vectors = pairs_of(triclinic, 5.0)
    padded = pad_neighbours(pairs, batch.batch, species, 2, include_center=include_center)
    padded_vectors = padded.vectors(batch.positions, batch.cell)  # [N, S, K, 3]
    assert int(padded.real.sum()) == len(pairs)
    assert int(padded.center.sum()) == (triclinic.n_atoms if include_center else 0)
    for i in range(triclinic.n_atoms):
        for a in range(2):
            got = padded_vectors[i, a][padded.real[i, a]].numpy()
            mask = (pairs.centers.numpy() == i) & (species[pairs.neighbors].numpy() == a)
            want = vectors[mask]
            assert got.shape == want.shape
            np.testing.assert_allclose(np.sort(got, axis=0), np.sort(want, axis=0), atol=1e-12)
    unused = ~padded.real
    assert torch.all(padded_vectors[unused] == 0)
    if include_center:
        assert torch.all(padded.center[torch.arange(3), species, 0])


@pytest.mark.parametrize("radial", ["chebyshev", "bessel"])
def test_delta_density_matches_pair_loop(triclinic, radial):
    r_cut, l_max = 4.5, 3
    basis = (ChebyshevBasis(0.5, r_cut, 5, l_max) if radial == "chebyshev"
             else SphericalBesselBasis(r_cut, 5, l_max))
    batch, pairs, species, vectors = pairs_of(triclinic, r_cut)
    padded = pad_neighbours(pairs, batch.batch, species, 2)
    v = padded.vectors(batch.positions, batch.cell)
    weights = padded.weights(cutoff_function("cosine", safe_distances(v, padded.real), r_cut))
    got = delta_density(v, weights, padded.real, basis, l_max).numpy()

    expected = np.zeros((3, 2, 5, (l_max + 1) ** 2))
    for p in range(len(pairs)):
        i, j = int(pairs.centers[p]), int(pairs.neighbors[p])
        r = np.linalg.norm(vectors[p])
        radial_values = basis(torch.tensor([r], dtype=torch.float64))[0].numpy()  # [L, n]
        fc = 0.5 * (1 + math.cos(math.pi * r / r_cut))
        y = real_ylm(vectors[p], l_max)
        for lm in range(len(y)):
            expected[i, int(species[j]), :, lm] += fc * radial_values[math.isqrt(lm)] * y[lm]
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_gaussian_density_matches_pair_loop(triclinic):
    sigma, l_max = 0.5, 3
    basis = GTOBasis(4.0, 4, l_max)
    batch, pairs, species, vectors = pairs_of(triclinic, 5.5)
    padded = pad_neighbours(pairs, batch.batch, species, 2, include_center=True)
    got = gaussian_density(padded.vectors(batch.positions, batch.cell), padded.weights(),
                           basis, sigma).numpy()

    expected = np.zeros((3, 2, 4, (l_max + 1) ** 2))
    for i in range(3):  # the central atom's own Gaussian: l = 0 only
        expected[i, int(species[i]), :, 0] += basis.smeared(
            torch.zeros(1, dtype=torch.float64), sigma)[0, 0].numpy() / math.sqrt(4 * math.pi)
    for p in range(len(pairs)):
        i, j = int(pairs.centers[p]), int(pairs.neighbors[p])
        d = np.linalg.norm(vectors[p])
        radial = basis.smeared(torch.tensor([d], dtype=torch.float64), sigma)[0].numpy()
        y = real_ylm(vectors[p], l_max)
        for lm in range(len(y)):
            l = math.isqrt(lm)
            expected[i, int(species[j]), :, lm] += radial[l] * d**l * y[lm]
    np.testing.assert_allclose(got, expected, atol=1e-12 * np.abs(expected).max())


def test_covariant_features_follow_eq_38(triclinic):
    r_cut, l_max = 4.5, 2
    basis = ChebyshevBasis(0.0, r_cut, 3, l_max)
    batch, pairs, species, vectors = pairs_of(triclinic, r_cut)
    padded = pad_neighbours(pairs, batch.batch, species, 2)
    v = padded.vectors(batch.positions, batch.cell)
    density = delta_density(v, padded.weights(), padded.real, basis, l_max)
    features = covariant_features(density, species).numpy()  # [i, lm, μ, β, γ]

    expected = np.zeros((3, (l_max + 1) ** 2, 3, 2, 2))
    for p in range(len(pairs)):
        i, j = int(pairs.centers[p]), int(pairs.neighbors[p])
        q = basis(torch.tensor([np.linalg.norm(vectors[p])], dtype=torch.float64))[0, 0].numpy()
        z_i, z_j = np.eye(2)[int(species[i])], np.eye(2)[int(species[j])]
        expected[i] += np.einsum("l,u,b,g->lubg", real_ylm(vectors[p], l_max), q, z_i, z_j)
    np.testing.assert_allclose(features, expected, atol=1e-12)


def test_shape_errors():
    basis = GTOBasis(3.0, 2, 1)
    with pytest.raises(ShapeError):
        gaussian_density(torch.zeros(2, 1, 3, 3), torch.zeros(2, 1, 2), basis, 0.5)
    with pytest.raises(ShapeError):
        covariant_features(torch.zeros(2, 1, 2, 4), torch.zeros(3, dtype=torch.int64))

"""Descriptor compression: independent entries, TT-SVD of inputs, MPO autoencoder (Sommer & Dunham IV D)."""

import numpy as np
import pytest
import torch
from ase.build import bulk

from entangle import io
from entangle.data import Structure
from entangle.descriptors import SOAP, SOAPConfig, structure_average
from entangle.descriptors.compress import (
    AutoencoderConfig, MPOAutoencoder, factorize_descriptors, fit_autoencoder, independent_entries,
    independent_indices, pad_to_sites,
)
from entangle.errors import ConfigError, DataError, ShapeError
from entangle.tn import MPS


@pytest.fixture(scope="module")
def soap_inputs() -> torch.Tensor:
    """Structure-averaged power spectra of six small binary alloys, independent entries padded
    to 4 sites of dimension 4: (6, 4, 4, 4, 4)."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    structures = []
    for k in range(6):
        atoms = bulk("Cu", "fcc", a=3.6 + 0.05 * k, cubic=True).repeat((1, 1, 2))
        atoms.numbers = rng.choice([29, 79], size=len(atoms))
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        structures.append(Structure.from_ase(atoms))
    soap = SOAP(SOAPConfig(species=("Cu", "Au"), r_cut=3.5, n_max=3, l_max=3, sigma=0.5))
    with torch.no_grad():
        out = soap(structures)
    b2 = structure_average(out.power_spectrum, out.structure_index, len(structures))  # [6, 2, 2, 3, 3, 4]
    flat = independent_entries(b2)
    assert flat.shape == (6, 1 * 9 * 4 + 2 * 6 * 4)  # S(S-1)/2 n^2 L + S n(n+1)/2 L = 84
    return pad_to_sites(flat, 4)  # 84 -> 4**4 = 256


def test_independent_entries_determine_the_power_spectrum():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 3, 4, 2, dtype=torch.float64, generator=g)  # [batch, S, n, L]-like factors
    b2 = torch.einsum("xanl,xbml->xabnml", a, a)  # symmetric under (a, n) <-> (b, m)
    index = independent_indices(3, 4, 2)
    assert index.size == 3 * 16 * 2 + 3 * 10 * 2
    flat = independent_entries(b2)
    # rebuild the full tensor from the kept entries and the symmetry
    full = torch.zeros(5, 3 * 3 * 4 * 4 * 2, dtype=torch.float64)
    full[:, torch.from_numpy(index)] = flat
    full = full.reshape(5, 3, 3, 4, 4, 2)
    mirrored = full.permute(0, 2, 1, 4, 3, 5)
    rebuilt = torch.where(full != 0, full, mirrored)
    torch.testing.assert_close(rebuilt, b2, rtol=0, atol=0)
    with pytest.raises(DataError, match="not symmetric"):
        independent_entries(b2 + 1e-3 * torch.randn(b2.shape, dtype=torch.float64, generator=g))


def test_pad_to_sites():
    x = torch.arange(1.0, 11.0).reshape(2, 5)
    padded = pad_to_sites(x, 2)  # 5 -> 2**3
    assert padded.shape == (2, 2, 2, 2)
    torch.testing.assert_close(padded.reshape(2, -1)[:, :5], x)
    assert float(padded.reshape(2, -1)[:, 5:].abs().sum()) == 0.0
    with pytest.raises(ShapeError):
        pad_to_sites(x, 2, n_sites=2)
    with pytest.raises(ConfigError):
        pad_to_sites(x, 1)


@pytest.mark.parametrize("max_bond", [1, 2, 3, None])
def test_tt_svd_reconstructs_within_discarded_weight(soap_inputs, max_bond):
    x = soap_inputs
    f = factorize_descriptors(x, max_bond=max_bond)
    error = (f.to_dense() - x).reshape(x.shape[0], -1).norm(dim=1)
    torch.testing.assert_close(error, f.discarded, rtol=1e-8, atol=1e-12 * float(x.norm()))
    if max_bond is None:
        assert float(f.discarded.max()) < 1e-12 * float(x.norm())
    else:
        assert int(f.bond_dims.max()) <= max_bond
    # the first cut alone: by Eckart-Young the error is bounded below by the tail of the SVD of
    # the (d_1, rest) unfolding, computed independently with numpy
    if max_bond is not None:
        for b in range(x.shape[0]):
            s = np.linalg.svd(x[b].reshape(4, -1).numpy(), compute_uv=False)
            assert float(f.discarded[b]) >= np.sqrt(np.sum(s[max_bond:] ** 2)) - 1e-12


def test_factorized_overlap_equals_dense_contraction(soap_inputs):
    f = factorize_descriptors(soap_inputs, max_bond=2)
    psi = MPS.random([4, 4, 4, 4], 3, generator=torch.Generator().manual_seed(0))
    dense = f.to_dense().reshape(6, -1) @ psi.to_dense().reshape(-1)
    torch.testing.assert_close(f.overlap(psi.cores), dense, rtol=1e-10, atol=1e-14)
    # fewer numbers than the dense input: 4*2 + 2*4*2*2 + 2*4*1 = 48 < 256 per sample at chi_in = 2
    assert int(f.n_parameters().max()) <= 4 * 2 + 2 * (2 * 4 * 2) + 2 * 4 < 256


def test_autoencoder_learns_a_low_dimensional_subspace():
    """Inputs live in a 2-dim subspace of every site's R^4 (random orientation): a d_latent = 2
    autoencoder can reconstruct them exactly, its identity initialisation cannot."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    basis = [torch.linalg.qr(torch.randn(4, 2, dtype=torch.float64, generator=g))[0] for _ in range(3)]
    coefficients = torch.randn(120, 2, 2, 2, dtype=torch.float64, generator=g)
    x = torch.einsum("zabc,ia,jb,kc->zijk", coefficients, *basis)  # [120, 4, 4, 4]
    model = MPOAutoencoder(AutoencoderConfig(n_sites=3, phys_dim=4, latent_dim=2, chi=2, seed=0))
    history = fit_autoencoder(model, x[:90], x[90:], epochs=60, lr=0.05, batch_size=30, patience=60)
    assert history.best_val_loss < 0.1 * history.initial_val_loss
    assert history.train_loss[-1] < history.initial_train_loss
    z = model.encode(x[90:])
    assert z.shape == (30, 2, 2, 2)
    torch.testing.assert_close(model.decode(z), model(x[90:]))
    assert model.compression == pytest.approx(1 / 8)


def test_autoencoder_save_load_and_config_errors(tmp_path):
    model = MPOAutoencoder(AutoencoderConfig(n_sites=2, phys_dim=3, latent_dim=2, chi=2, seed=4))
    x = torch.randn(5, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    io.save(model, tmp_path / "ae")
    torch.testing.assert_close(io.load(tmp_path / "ae")(x), model(x), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="latent_dim"):
        AutoencoderConfig(n_sites=2, phys_dim=3, latent_dim=4)
    with pytest.raises(ConfigError, match="chi"):
        AutoencoderConfig(n_sites=2, phys_dim=3, latent_dim=2, chi=0)
    with pytest.raises(ShapeError):
        model(torch.zeros(5, 3, 4, dtype=torch.float64))
    with pytest.raises(ConfigError):
        factorize_descriptors(x.reshape(5, 3, 3), max_bond=0)

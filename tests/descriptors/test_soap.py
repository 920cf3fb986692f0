import dataclasses
import math

import numpy as np
import pytest
import scipy.special
import torch
from dscribe.descriptors import SOAP as DScribeSOAP

from entangle.data import AtomsBatch, Structure
from entangle.descriptors import (
    SOAP,
    SOAPConfig,
    bispectrum,
    dscribe_indices,
    power_spectrum,
    structure_average,
)
from entangle.errors import ConfigError, DataError, ShapeError
from entangle.so3 import random_rotation

from descriptor_samples import cuau_cell, molecule, triclinic_cell

F64 = torch.float64


def relative_error(got: np.ndarray, reference: np.ndarray) -> float:
    """Largest deviation of an atom's feature vector relative to that vector's largest entry."""
    scale = np.abs(reference).max(axis=-1, keepdims=True)
    return float((np.abs(got - reference) / scale).max())


def unique_entries(b2: torch.Tensor, species, n_max, l_max, crossover=True) -> np.ndarray:
    flat = b2.detach().reshape(b2.shape[0], -1).double().numpy()
    return flat[:, dscribe_indices(species, n_max, l_max, crossover)]


CASES = {
    "cuau": (cuau_cell, ("Au", "Cu"), 5.0, 6, 5, 0.5, True),
    "triclinic": (triclinic_cell, (79, 29), 4.0, 4, 6, 0.4, True),
    "cluster": (molecule, ("O", "H", "C"), 3.5, 5, 4, 0.7, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_power_spectrum_matches_dscribe(case):
    build, species, r_cut, n_max, l_max, sigma, periodic = CASES[case]
    atoms = build()
    reference = DScribeSOAP(species=list(species), r_cut=r_cut, n_max=n_max, l_max=l_max,
                            sigma=sigma, periodic=periodic).create(atoms)
    soap = SOAP(SOAPConfig(species=species, r_cut=r_cut, n_max=n_max, l_max=l_max, sigma=sigma))
    out = soap([Structure.from_ase(atoms)])
    b2 = out.power_spectrum
    assert b2.shape == (len(atoms), len(species), len(species), n_max, n_max, l_max + 1)
    assert relative_error(unique_entries(b2, species, n_max, l_max), reference) < 1e-8
    # the full tensor is symmetric under (α1, n1) <-> (α2, n2)
    torch.testing.assert_close(b2, b2.permute(0, 2, 1, 4, 3, 5), rtol=0, atol=1e-12)


def test_crossover_compression_matches_dscribe():
    atoms = cuau_cell(3)
    reference = DScribeSOAP(species=["Cu", "Au"], r_cut=4.5, n_max=4, l_max=4, sigma=0.5,
                            periodic=True, compression={"mode": "crossover"}).create(atoms)
    soap = SOAP(SOAPConfig(species=("Cu", "Au"), r_cut=4.5, n_max=4, l_max=4, sigma=0.5,
                           crossover=False))
    b2 = soap([Structure.from_ase(atoms)]).power_spectrum
    assert b2.shape == (len(atoms), 2, 4, 4, 5)
    got = unique_entries(b2, ("Cu", "Au"), 4, 4, crossover=False)
    assert relative_error(got, reference) < 1e-8


def test_structure_average_matches_dscribe_outer_average():
    frames = [cuau_cell(4), triclinic_cell(5)]
    dscribe = DScribeSOAP(species=["Cu", "Au"], r_cut=4.0, n_max=3, l_max=3, sigma=0.6,
                          periodic=True, average="outer")
    reference = np.stack([dscribe.create(a) for a in frames])
    soap = SOAP(SOAPConfig(species=("Cu", "Au"), r_cut=4.0, n_max=3, l_max=3, sigma=0.6))
    out = soap([Structure.from_ase(a) for a in frames])
    averaged = structure_average(out.power_spectrum, out.structure_index, 2)  # eq. 22
    assert relative_error(unique_entries(averaged, ("Cu", "Au"), 3, 3), reference) < 1e-8
    torch.testing.assert_close(averaged[1], out.power_spectrum[-3:].mean(dim=0))


def test_float32_stays_close_to_dscribe():
    atoms = cuau_cell(6)
    reference = DScribeSOAP(species=["Cu", "Au"], r_cut=5.0, n_max=6, l_max=4, sigma=0.5,
                            periodic=True).create(atoms)
    soap = SOAP(SOAPConfig(species=("Cu", "Au"), r_cut=5.0, n_max=6, l_max=4, sigma=0.5))
    batch = AtomsBatch.from_structures([Structure.from_ase(atoms)], dtype=torch.float32)
    b2 = soap(batch).power_spectrum
    assert b2.dtype == torch.float32
    assert relative_error(unique_entries(b2, ("Cu", "Au"), 6, 4), reference) < 1e-4


# --------------------------------------------------------------------------------------------
# eqs. (14) and (15) of Sommer & Dunham against a complex-basis reference
# --------------------------------------------------------------------------------------------

def complex_density(structure: Structure, soap: SOAP) -> np.ndarray:
    """A[i, α, n, l, m + l] = Σ_j f_c Q_n(r_ij) Y_l^m(r̂_ij) with scipy's complex harmonics."""
    batch = soap.batch([structure])
    neighbours = soap.neighbours(batch)
    vectors = neighbours.vectors(batch.positions, batch.cell).numpy()
    real = neighbours.real.numpy()
    l_max, n_max = soap.config.l_max, soap.config.n_max
    out = np.zeros((structure.n_atoms, soap.n_species, n_max, l_max + 1, 2 * l_max + 1), complex)
    for i, a, k in zip(*np.nonzero(real)):
        v = vectors[i, a, k]
        r = np.linalg.norm(v)
        theta, phi = math.acos(v[2] / r), math.atan2(v[1], v[0])
        q = soap.radial(torch.tensor([r], dtype=F64))[0, 0].numpy()  # [n]
        for l in range(l_max + 1):
            for m in range(-l, l + 1):
                out[i, a, :, l, m + l] += q * scipy.special.sph_harm_y(l, m, theta, phi)
    return out


def delta_soap(l_max: int, **changes) -> SOAP:
    config = dict(species=("Cu", "Au"), r_cut=4.0, n_max=3, l_max=l_max, rbf="chebyshev",
                  density="delta", r_min=0.5)
    config.update(changes)
    return SOAP(SOAPConfig(**config))


def test_cg_power_spectrum_is_eq_14(triclinic):
    soap = delta_soap(3, normalisation="cg")
    a = complex_density(triclinic, soap)
    expected = np.zeros((3, 2, 2, 3, 3, 4), complex)
    for l in range(4):
        for m in range(-l, l + 1):
            expected[..., l] += ((-1) ** (l - m) / math.sqrt(2 * l + 1)
                                 * np.einsum("iap,ibq->iabpq", a[..., l, m + l], a[..., l, -m + l]))
    assert np.abs(expected.imag).max() < 1e-12
    got = soap([triclinic]).power_spectrum.numpy()
    np.testing.assert_allclose(got, expected.real, atol=1e-12 * np.abs(expected).max())


def test_bispectrum_is_eq_15(triclinic):
    from sympy.physics.quantum.cg import CG

    l_max = 2
    soap = delta_soap(l_max, bispectrum=True)
    a = complex_density(triclinic, soap)
    out = soap([triclinic])
    got = out.bispectrum.numpy()  # [N, S, S, S, n, n, n, L, L, L]
    size = l_max + 1
    for l1 in range(size):
        for l2 in range(size):
            for l3 in range(size):
                if (l1 + l2 + l3) % 2 or not abs(l1 - l2) <= l3 <= l1 + l2:
                    assert np.all(got[..., l1, l2, l3] == 0)
                    continue
                expected = np.zeros(got.shape[:7], complex)
                for m1 in range(-l1, l1 + 1):
                    for m2 in range(-l2, l2 + 1):
                        m3 = -(m1 + m2)
                        if abs(m3) > l3:
                            continue
                        c = float(CG(l1, m1, l2, m2, l3, -m3).doit())
                        factor = (-1) ** (l3 - m3) / math.sqrt(2 * l3 + 1) * c
                        expected += factor * np.einsum(
                            "iap,ibq,icr->iabcpqr", a[..., l1, m1 + l1], a[..., l2, m2 + l2],
                            a[..., l3, m3 + l3])
                assert np.abs(expected.imag).max() < 1e-12
                np.testing.assert_allclose(got[..., l1, l2, l3], expected.real, atol=1e-11)
    # B3 contracted with itself only through the functions of the module: l = 0 slice is
    # B1 ⊗ B1 ⊗ B1 / sqrt(1) (the 3j symbol (000;000) = 1)
    b1 = out.density[..., 0]  # [N, S, n]
    torch.testing.assert_close(out.bispectrum[..., 0, 0, 0],
                               torch.einsum("iap,ibq,icr->iabcpqr", b1, b1, b1))


# --------------------------------------------------------------------------------------------
# symmetries
# --------------------------------------------------------------------------------------------

def transformed(structure: Structure, matrix: np.ndarray, shift: np.ndarray) -> Structure:
    positions = structure.positions @ matrix.T + shift
    return structure.replace(positions=positions, cell=structure.cell @ matrix.T)


@pytest.mark.parametrize("name", ["cuau", "cluster"])
def test_invariance_under_rotation_reflection_translation_permutation(name):
    atoms = cuau_cell(7, repeat=1) if name == "cuau" else molecule(8)
    structure = Structure.from_ase(atoms)
    species = ("Cu", "Au") if name == "cuau" else ("H", "C", "O")
    soap = SOAP(SOAPConfig(species=species, r_cut=4.0, n_max=3, l_max=3, sigma=0.5,
                           bispectrum=True))
    reference = soap([structure])
    rotation = random_rotation(11).numpy()
    shift = np.array([0.31, -1.7, 2.2])
    variants = {
        "rotation": transformed(structure, rotation, shift * 0),
        "reflection": transformed(structure, -rotation, shift * 0),
        "translation": transformed(structure, np.eye(3), shift),
        "rotation+translation": transformed(structure, rotation, shift),
    }
    for label, variant in variants.items():
        out = soap([variant])
        for got, want in ((out.power_spectrum, reference.power_spectrum),
                          (out.bispectrum, reference.bispectrum)):
            scale = float(want.abs().max())
            assert float((got - want).abs().max()) < 1e-10 * scale, label
    # permuting atoms of the same species permutes the per-atom invariants
    numbers = structure.numbers
    order = np.arange(len(numbers))
    same = np.nonzero(numbers == numbers[0])[0]
    order[same] = same[::-1]
    permuted = structure.replace(positions=structure.positions[order], numbers=numbers[order])
    out = soap([permuted])
    for got, want in ((out.power_spectrum, reference.power_spectrum[order]),
                      (out.bispectrum, reference.bispectrum[order])):
        assert float((got - want).abs().max()) < 1e-10 * float(want.abs().max())


# --------------------------------------------------------------------------------------------
# forces and stress by autograd
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cutoff", [None, "cosine"])
def test_autograd_forces_and_stress_match_finite_differences(cutoff):
    structure = Structure.from_ase(triclinic_cell(9))
    soap = SOAP(SOAPConfig(species=("Cu", "Au"), r_cut=3.5, n_max=3, l_max=2, sigma=0.5,
                           cutoff=cutoff, bispectrum=True))
    batch = soap.batch([structure])
    neighbours = soap.neighbours(batch)
    reference = soap([structure])
    generator = torch.Generator().manual_seed(0)
    w2 = torch.randn(reference.power_spectrum.shape[1:], dtype=F64, generator=generator)
    w3 = torch.randn(reference.bispectrum.shape[1:], dtype=F64, generator=generator)

    def energy(positions, cell):
        strained = dataclasses.replace(batch, positions=positions, cell=cell)
        out = soap(strained, neighbours)
        return (out.power_spectrum * w2).sum() + (out.bispectrum * w3).sum()

    strain = torch.zeros(3, 3, dtype=F64, requires_grad=True)
    positions = batch.positions.clone().requires_grad_(True)
    deformation = torch.eye(3, dtype=F64) + strain
    e = energy(positions @ deformation, batch.cell @ deformation)
    forces, virial = torch.autograd.grad(e, (positions, strain))

    h = 1e-5
    for atom, axis in [(0, 0), (1, 2), (2, 1)]:
        step = torch.zeros_like(batch.positions)
        step[atom, axis] = h
        fd = (energy(batch.positions + step, batch.cell)
              - energy(batch.positions - step, batch.cell)) / (2 * h)
        assert float(forces[atom, axis]) == pytest.approx(float(fd), rel=1e-6, abs=1e-8)
    for a, b in [(0, 0), (1, 2), (2, 0)]:
        eps = torch.zeros(3, 3, dtype=F64)
        eps[a, b] = eps[b, a] = h
        plus, minus = torch.eye(3, dtype=F64) + eps, torch.eye(3, dtype=F64) - eps
        fd = (energy(batch.positions @ plus, batch.cell @ plus)
              - energy(batch.positions @ minus, batch.cell @ minus)) / (2 * h)
        sym = virial[a, b] if a == b else virial[a, b] + virial[b, a]
        assert float(sym) == pytest.approx(float(fd), rel=1e-6, abs=1e-8)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------

def test_config_validation():
    with pytest.raises(ConfigError):
        SOAPConfig(species=("Cu", "Xx"), r_cut=4.0, n_max=3, l_max=2)
    with pytest.raises(ConfigError):
        SOAPConfig(species=("Cu", 29), r_cut=4.0, n_max=3, l_max=2)
    with pytest.raises(ConfigError):
        SOAPConfig(species=("Cu",), r_cut=4.0, n_max=3, l_max=2, rbf="chebyshev")
    with pytest.raises(ConfigError):
        SOAPConfig(species=("Cu",), r_cut=4.0, n_max=3, l_max=2, density="delta",
                   include_center=True)
    with pytest.raises(ConfigError):
        SOAPConfig(species=("Cu",), r_cut=-1.0, n_max=3, l_max=2)
    with pytest.raises(ConfigError):
        SOAPConfig(species=("Cu",), r_cut=4.0, n_max=3, l_max=2, normalisation="unit")
    config = SOAPConfig(species=("Au", 29), r_cut=4.0, n_max=3, l_max=2, sigma=0.3)
    assert config.species == (79, 29)
    assert SOAPConfig(species=["Au", "29"], r_cut=4.0, n_max=3, l_max=2).species == (79, 29)
    assert SOAPConfig(**config.to_dict()) == config
    assert config.neighbour_radius == pytest.approx(4.0 + 0.3 * math.sqrt(2 * math.log(1000)))


def test_unknown_element_names_the_structure(cuau, cluster):
    soap = SOAP(SOAPConfig(species=("Cu", "Au"), r_cut=4.0, n_max=3, l_max=2))
    with pytest.raises(DataError, match="structure 1.*atomic number"):
        soap([cuau, cluster])


def test_invariant_functions_check_shapes():
    with pytest.raises(ShapeError):
        power_spectrum(torch.zeros(2, 1, 3, 5))
    with pytest.raises(ShapeError):
        bispectrum(torch.zeros(2, 3, 4))
    with pytest.raises(ShapeError):
        structure_average(torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64))


@pytest.mark.parametrize("rbf", ["chebyshev", "bessel"])
def test_delta_density_runs_in_float32(rbf, triclinic):
    soap = delta_soap(3, rbf=rbf, cutoff="cosine")
    batch64 = soap.batch([triclinic])
    batch32 = soap.batch([triclinic], dtype=torch.float32)
    b64 = soap(batch64).power_spectrum
    b32 = soap(batch32).power_spectrum
    assert b32.dtype == torch.float32
    torch.testing.assert_close(b32.double(), b64, rtol=1e-4, atol=1e-5 * float(b64.abs().max()))

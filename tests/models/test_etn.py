"""Physics tests of the ETN potential (Hodapp & Shapeev Sec. 5): O(3) and permutation
invariance, forces and stress as derivatives, edge cases, save/load."""

import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111

from entangle import io
from entangle.data import AtomsBatch, Structure, neighbour_list
from entangle.errors import ConfigError, DataError
from entangle.models.etn import (
    ETNConfig, ETNPotential, chebyshev_radial, ett_energy_and_gradient, harmonics_with_gradient,
)
from entangle.so3 import real_spherical_harmonics
from entangle.so3.equivariant import EquivariantTensor, contract_chain
from entangle.testing import (
    assert_equivariant, assert_forces_are_gradient, assert_invariant,
    assert_stress_is_strain_derivative,
)


def structure_of(atoms) -> Structure:
    return Structure(positions=atoms.positions, numbers=atoms.numbers,
                     cell=np.array(atoms.cell), pbc=atoms.pbc)


@pytest.fixture(scope="module")
def cuau() -> Structure:
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
    atoms.numbers[[1, 4, 6]] = 79
    atoms.rattle(0.15, seed=3)
    return structure_of(atoms)


def model_for(d: int, L: int = 3, seed: int = 0, **kw) -> ETNPotential:
    cfg = ETNConfig(species=[29, 79], n_rad=5, d=d, L=L, spec_rank=2, rad_rank=3, ett_rank=2,
                    r_cut=4.5, reference_energies=[-1.0, -2.0], feature_scale=10.0,
                    seed=seed, **kw)
    return ETNPotential(cfg)


@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_energy_is_o3_and_permutation_invariant(cuau, d):
    model = model_for(d)
    assert_invariant(model, cuau, atol=1e-10, rtol=1e-10)


def test_forces_and_stress_equivariant(cuau):
    assert_equivariant(model_for(4), cuau, atol=1e-9)


@pytest.mark.parametrize("d", [3, 4])
def test_forces_are_minus_gradient(cuau, d):
    assert_forces_are_gradient(model_for(d), cuau, n_atoms=3, atol=1e-7)


def test_stress_is_strain_derivative(cuau):
    assert_stress_is_strain_derivative(model_for(3), cuau, atol=1e-8)


def test_fast_contraction_matches_equivariant_tensor_chain(cuau):
    model = model_for(4)
    batch = AtomsBatch.from_structures([cuau])
    geom = model.geometry(batch, neighbour_list(batch, model.config.r_cut))
    v = model.features(geom)
    fast = model.contract(v)
    slow = contract_chain([model.core_tensor(k) for k in range(4)], [v] * 4)
    assert torch.allclose(fast, slow, rtol=1e-12, atol=1e-12)


def test_ett_input_gradient_matches_autograd(cuau):
    model = model_for(4)
    batch = AtomsBatch.from_structures([cuau])
    v = model.features(model.geometry(batch, neighbour_list(batch, model.config.r_cut)))
    v = v.detach().requires_grad_(True)
    cores = [c.detach() for c in model.dense_cores()]
    energy, grad = ett_energy_and_gradient(v, cores)
    (auto,) = torch.autograd.grad(energy.sum(), v)
    assert torch.allclose(grad, auto, rtol=1e-12, atol=1e-13)
    # a merged two-site core (two physical legs) gives the same values and gradients
    merged = torch.einsum("abx,xcd->abcd", cores[1], cores[2])
    e2, g2 = ett_energy_and_gradient(v, [cores[0], merged, cores[3]])
    assert torch.allclose(e2, energy, rtol=1e-12) and torch.allclose(g2, grad, rtol=1e-11)


def large_model(d: int = 3) -> ETNPotential:
    """Middle cores large enough (> 2^16 entries) to be contracted block by block."""
    return ETNPotential(ETNConfig(species=[29, 79], n_rad=16, d=d, L=4, spec_rank=2, rad_rank=6,
                                  ett_rank=6, decay_rad=2.0, r_cut=4.5, feature_scale=10.0,
                                  init_scale=0.3))


@pytest.mark.parametrize("d", [3, 4])
def test_blocked_contraction_skips_only_zeros(cuau, d):
    model = large_model(d)
    blocks = model.core_blocks()
    assert blocks[0] is None and all(b is not None for b in blocks[1:-1])
    batch = AtomsBatch.from_structures([cuau])
    geom = model.geometry(batch, neighbour_list(batch, model.config.r_cut), derivatives=True)
    v = model.features(geom).detach()
    cores = model.dense_cores()
    # every entry of a middle core outside its blocks is zero
    for core, plan in zip(cores, blocks):
        if plan is not None:
            mask = torch.ones_like(core, dtype=torch.bool)
            for b in plan:
                mask[b.rows, b.phys, b.cols] = False
            assert core[mask].abs().max() == 0 and mask.float().mean() > 0.4
    dense = ett_energy_and_gradient(v, [c.detach() for c in cores])
    blocked = ett_energy_and_gradient(v, [c.detach() for c in cores], blocks=blocks)
    for a, b in zip(dense, blocked):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    # the training loss and its parameter gradient are the same along both paths
    grads = []
    for replace in (False, True):
        model.zero_grad()
        out = model.evaluate(geom, forces=True, stress=True,
                             cores=model.dense_cores() if replace else None)
        (out["energy"].sum() + out["forces"].square().sum() + out["stress"].sum()).backward()
        grads.append([p.grad.clone() for p in model.cores])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_large_model_is_invariant_with_forces_as_gradient(cuau):
    model = large_model()
    assert_invariant(model, cuau, atol=1e-10, rtol=1e-10)
    assert_forces_are_gradient(model, cuau, n_atoms=2, atol=1e-7)


def test_stored_jacobian_gives_the_same_forces_and_stress(cuau):
    model = model_for(3)
    batch = AtomsBatch.from_structures([cuau])
    nbrs = neighbour_list(batch, 5.0)  # longer than r_cut: pairs beyond it are dropped
    with torch.no_grad():
        fly = model.evaluate(model.geometry(batch, nbrs), forces=True, stress=True)
        jac = model.evaluate(model.geometry(batch, nbrs, jacobian=True), forces=True,
                             stress=True)
    for key in ("energy", "forces", "stress"):
        assert torch.allclose(fly[key], jac[key], rtol=1e-12, atol=1e-12), key
    assert fly["forces"].abs().max() > 1e-3


def test_standardized_descriptors_and_symmetry(cuau):
    model = model_for(3)
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=5.0)
    slab.numbers[[0, 5]] = 79
    structures = [cuau, structure_of(slab)]
    batch = AtomsBatch.from_structures(structures)
    geom = model.geometry(batch, neighbour_list(batch, model.config.r_cut), derivatives=False)
    model.standardize([geom])
    # effective l = 0 descriptors of each atom's own species pairs: mean 0, variance 1
    n_types, n_rad = 4, model.channels["n_rad"][0]
    f = geom.descriptors[0].view(-1, n_types, n_rad)
    shift = model.descriptor_shift.view(n_types, n_rad)
    scale = model.descriptor_scale[:n_types * n_rad].view(n_types, n_rad)
    for t in range(n_types):
        own = geom.species == t // 2
        z = (f[own, t] - shift[t]) / scale[t]
        assert torch.allclose(z.mean(0), torch.zeros(n_rad, dtype=z.dtype), atol=1e-10)
        assert torch.allclose(z.var(0, unbiased=False), torch.ones(n_rad, dtype=z.dtype))
    assert float(model.descriptor_scale[n_types * n_rad:].min()) < 0.5  # l = 1 rescaled
    assert_invariant(model, cuau, atol=1e-10, rtol=1e-10)
    assert_forces_are_gradient(model, structure_of(slab), n_atoms=2, atol=1e-6)
    assert_stress_is_strain_derivative(model, cuau, atol=1e-7)


def test_harmonic_gradients_match_autograd():
    g = torch.Generator().manual_seed(0)
    vec = torch.randn(50, 3, generator=g, dtype=torch.float64) * 2
    for l_max in (0, 1, 3, 5):
        y, dy = harmonics_with_gradient(vec, l_max)
        x = vec.clone().requires_grad_(True)
        ref = real_spherical_harmonics(x, l_max)
        assert torch.all(dy[:, 0] == 0)  # Y_00 is constant
        for k in range(1, ref.shape[1]):
            (auto,) = torch.autograd.grad(ref[:, k].sum(), x, retain_graph=True)
            assert torch.allclose(dy[:, k], auto, atol=1e-12)
        assert torch.allclose(y, ref.detach())


def test_radial_derivative_matches_autograd():
    r = torch.linspace(0.8, 5.2, 40, dtype=torch.float64).requires_grad_(True)
    q, dq = chebyshev_radial(r, 7, 1.5, 5.0)
    for mu in range(7):
        (auto,) = torch.autograd.grad(q[:, mu].sum(), r, retain_graph=True)
        assert torch.allclose(dq[:, mu], auto, atol=1e-12)
    assert torch.all(q[r > 5.0] == 0)


def test_reference_energy_of_isolated_atoms():
    model = model_for(3)
    atoms = Structure(positions=[[0, 0, 0], [10.0, 0, 0]], numbers=[29, 79])
    out = model.predict(atoms)
    # no neighbours: only the constant input enters the train
    const = model.contract(torch.eye(1, model.phys.dim, dtype=torch.float64))
    expect = float(model.reference.detach().sum()) + 2 * float(const.detach())
    assert out["energy"] == pytest.approx(expect, abs=1e-12)
    # the initial scalar path is 1 per atom and was taken off the references (-1, -2)
    assert float(model.reference.detach().sum()) == pytest.approx(-5.0)
    assert np.all(out["forces"] == 0.0)


def test_small_periodic_cell_sees_its_images():
    prim = bulk("Cu", "fcc", a=3.6)  # one atom, cell much smaller than the cutoff
    big = prim.repeat((2, 2, 2))
    model = model_for(3)
    e1 = model.predict(structure_of(prim))["energy"]
    e8 = model.predict(structure_of(big))["energy"]
    assert e8 == pytest.approx(8 * e1, rel=1e-12)
    s = structure_of(prim)
    assert_stress_is_strain_derivative(model, s, atol=1e-8)


def test_surface_slab_invariant():
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=5.0)
    slab.numbers[0] = 79
    assert_invariant(model_for(3), structure_of(slab), n_trials=1)


def test_unknown_species_raises(cuau):
    s = cuau.replace(numbers=np.where(cuau.numbers == 79, 47, cuau.numbers))
    with pytest.raises(DataError, match="47"):
        model_for(3).predict(s)


def test_bad_config():
    with pytest.raises(ConfigError):
        ETNConfig(species=[29], d=0)
    with pytest.raises(ConfigError):
        ETNConfig(species=[29, 29])


def test_parameter_count_etn1_of_table2():
    # Table 2: ETN1 {7, 3, 1, 2, 2, 1} for 5 species has 92 coefficients
    cfg = ETNConfig(species=[23, 41, 42, 73, 74], n_rad=7, d=3, L=1, spec_rank=2, rad_rank=2,
                    ett_rank=1)
    assert ETNPotential(cfg).n_parameters() == 92


def test_save_load_roundtrip(tmp_path, cuau):
    model = model_for(4, dtype="float64")
    batch = AtomsBatch.from_structures([cuau])
    model.standardize([model.geometry(batch, neighbour_list(batch, 4.5), derivatives=False)])
    io.save(model, tmp_path / "model")
    back = io.load(tmp_path / "model")
    assert torch.equal(back.descriptor_scale, model.descriptor_scale)
    assert back.predict(cuau)["energy"] == model.predict(cuau)["energy"]


def test_float32_close_to_float64(cuau):
    e64 = model_for(3).predict(cuau)["energy"]
    e32 = model_for(3, dtype="float32").predict(cuau)["energy"]
    assert e32 == pytest.approx(e64, rel=1e-5)


def test_orthogonalised_cores_give_same_energy(cuau, tmp_path):
    from entangle.so3.equivariant import orthogonalize_left
    model = model_for(4)
    ref = model.predict(cuau)["energy"]
    for k in range(3):
        a, b = orthogonalize_left(model.core_tensor(k), model.core_tensor(k + 1))
        model.set_core(k, a)
        model.set_core(k + 1, b)
    assert model.predict(cuau)["energy"] == pytest.approx(ref, rel=1e-12)
    assert isinstance(model.core_tensor(0), EquivariantTensor)
    # the config records the (possibly shrunk) bonds, so a saved model rebuilds with them
    assert model.config.bonds == [[list(b) for b in layout.legs[2].blocks]
                                  for layout in model.layouts[:-1]]
    assert model.config.bonds != [[list(b) for b in layout.legs[2].blocks]
                                  for layout in model_for(4).layouts[:-1]]
    io.save(model, tmp_path / "model")
    assert io.load(tmp_path / "model").predict(cuau)["energy"] == pytest.approx(ref, rel=1e-12)

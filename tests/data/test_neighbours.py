"""Neighbour lists against ASE, batching, and differentiable pair vectors (forces, stress)."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.lj import LennardJones
from ase.neighborlist import neighbor_list as ase_neighbor_list

from entangle.data import AtomsBatch, Structure, neighbour_list, pair_vectors
from entangle.errors import ConfigError, ShapeError


def _structure(atoms: Atoms) -> Structure:
    return Structure(positions=atoms.positions, numbers=atoms.numbers, cell=atoms.cell[:],
                     pbc=atoms.pbc)


def _systems() -> dict[str, Atoms]:
    rng = np.random.default_rng(7)
    small = bulk("Si", "diamond", a=5.43)  # 2 atoms, cell much smaller than the cutoff
    small.positions += 0.1 * rng.standard_normal(small.positions.shape)
    triclinic = Atoms("Cu3Au", cell=[[4.0, 0.3, -0.2], [0.8, 3.7, 0.1], [-0.5, 0.6, 4.2]],
                      scaled_positions=rng.uniform(0, 1, (4, 3)), pbc=True)
    slab = Atoms("H6", cell=[[3.0, 0.0, 0.0], [1.0, 2.8, 0.0], [0.0, 0.0, 0.0]],
                 positions=rng.uniform(-1, 4, (6, 3)), pbc=[True, True, False])
    wire = Atoms("H5", cell=[[0.0, 0.0, 0.0], [0.0, 2.5, 0.0], [0.0, 0.0, 0.0]],
                 positions=rng.uniform(-1, 3, (5, 3)), pbc=[False, True, False])
    mixed = Atoms("H6", cell=[[3.5, 0.0, 0.0], [0.0, 3.0, 0.0], [0.3, 0.2, 3.2]],
                  positions=rng.uniform(-1, 4, (6, 3)), pbc=[True, False, True])
    water = molecule("H2O")  # no cell at all
    boxed = molecule("CH3CH2OH")
    boxed.cell = [50.0, 50.0, 50.0]  # a box that is not periodic, as in the BOTNet files
    return {"small": small, "triclinic": triclinic, "slab": slab, "wire": wire,
            "mixed": mixed, "water": water, "boxed": boxed}


@pytest.mark.parametrize("name", list(_systems()))
@pytest.mark.parametrize("cutoff", [3.0, 6.0])
def test_same_pairs_and_distances_as_ase(name, cutoff):
    atoms = _systems()[name]
    pairs = neighbour_list([_structure(atoms)], cutoff)
    i, j, shifts, d = ase_neighbor_list("ijSd", atoms, cutoff)
    ours = set(zip(pairs.centers.tolist(), pairs.neighbors.tolist(),
                   map(tuple, pairs.shifts.tolist())))
    assert ours == set(zip(i.tolist(), j.tolist(), map(tuple, shifts.tolist())))
    assert len(ours) == len(pairs) and len(pairs) > 0
    positions = torch.tensor(atoms.positions)
    r = pair_vectors(positions, torch.tensor(atoms.cell[:]), pairs)
    ase_d = dict(zip(zip(i.tolist(), j.tolist(), map(tuple, shifts.tolist())), d))
    ours_d = [ase_d[(a, b, tuple(s))] for a, b, s in zip(
        pairs.centers.tolist(), pairs.neighbors.tolist(), pairs.shifts.tolist())]
    np.testing.assert_allclose(r.norm(dim=1).numpy(), ours_d, rtol=1e-12)
    assert (pairs.shifts[:, ~torch.tensor(atoms.pbc)] == 0).all()
    assert not ((pairs.centers == pairs.neighbors) & (pairs.shifts == 0).all(1)).any()


def test_small_cell_has_many_images():
    atoms = _systems()["small"]
    pairs = neighbour_list(_structure(atoms), 6.0)
    assert pairs.shifts.abs().max() >= 2  # images beyond the first shell
    assert ((pairs.centers == pairs.neighbors)).any()  # an atom sees its own images


def test_batch_offsets_and_structure_index():
    systems = _systems()
    structures = [_structure(systems[n]) for n in ("small", "water", "slab")]
    combined = neighbour_list(structures, 3.0)
    offset = 0
    for k, s in enumerate(structures):
        alone = neighbour_list(s, 3.0)
        mine = combined.structure == k
        assert torch.equal(combined.centers[mine], alone.centers + offset)
        assert torch.equal(combined.neighbors[mine], alone.neighbors + offset)
        assert torch.equal(combined.shifts[mine], alone.shifts)
        offset += s.n_atoms
    batch = AtomsBatch.from_structures(structures)
    from_batch = neighbour_list(batch, 3.0)
    for name in ("centers", "neighbors", "shifts", "structure"):
        assert torch.equal(getattr(from_batch, name), getattr(combined, name))
    r = pair_vectors(batch.positions, batch.cell, from_batch)
    assert r.shape == (len(from_batch), 3) and (r.norm(dim=1) < 3.0).all()


@pytest.mark.parametrize("name", ["small", "triclinic", "slab", "mixed"])
def test_sorted_and_unsorted_lists(name):
    """Sorted lists are ordered by (i, j, S) exactly; sort=False gives the same pairs."""
    s = _structure(_systems()[name])
    pairs = neighbour_list([s, s], 6.0)
    rows = [(int(k), i, j, *shift) for k, i, j, shift in zip(
        pairs.structure, pairs.centers.tolist(), pairs.neighbors.tolist(),
        pairs.shifts.tolist())]
    assert rows == sorted(rows) and len(set(rows)) == len(rows)
    loose = neighbour_list([s, s], 6.0, sort=False)
    assert torch.equal(loose.structure, pairs.structure)  # structures stay in order
    assert sorted(zip(loose.structure.tolist(), loose.centers.tolist(),
                      loose.neighbors.tolist(), map(tuple, loose.shifts.tolist()))) \
        == [(k, i, j, tuple(shift)) for k, i, j, *shift in rows]
    batch = AtomsBatch.from_structures([s, s])
    torch.testing.assert_close(pair_vectors(batch.positions, batch.cell, loose).norm(dim=1),
                               pair_vectors(batch.positions[:s.n_atoms], batch.cell[:1],
                                            neighbour_list(s, 6.0, sort=False)
                                            ).norm(dim=1).repeat(2), rtol=1e-14, atol=1e-14)


def test_bad_arguments():
    s = _structure(_systems()["water"])
    for cutoff in (0.0, -1.0, float("nan"), float("inf"), "5"):
        with pytest.raises(ConfigError):
            neighbour_list([s], cutoff)
    pairs = neighbour_list([s], 2.0)
    with pytest.raises(ShapeError):
        pair_vectors(torch.zeros(3, 2), torch.zeros(1, 3, 3), pairs)
    with pytest.raises(ShapeError):
        pair_vectors(torch.zeros(3, 3), torch.zeros(1, 3, 4), pairs)


def _lj_energy(positions, cell, pairs, sigma, epsilon, rc):
    """ASE's (shifted, not smoothed) Lennard-Jones energy written with pair_vectors."""
    r2 = (pair_vectors(positions, cell, pairs) ** 2).sum(-1)  # [P]
    c6 = (sigma**2 / r2) ** 3
    e0 = 4 * epsilon * ((sigma / rc) ** 12 - (sigma / rc) ** 6)
    return 0.5 * (4 * epsilon * (c6**2 - c6) - e0).sum()


def test_autograd_forces_and_stress_match_ase_lennard_jones():
    """Forces -dE/dx and stress (1/V) dE/dε through pair_vectors equal ASE's analytic ones."""
    rng = np.random.default_rng(11)
    atoms = bulk("Ar", "fcc", a=5.3) * (2, 1, 1)  # cell smaller than 2x the cutoff
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.03 * rng.standard_normal((3, 3))),
                   scale_atoms=True)
    atoms.positions += 0.1 * rng.standard_normal(atoms.positions.shape)
    sigma, epsilon, rc = 3.4, 0.0104, 8.0
    atoms.calc = LennardJones(sigma=sigma, epsilon=epsilon, rc=rc)
    pairs = neighbour_list(_structure(atoms), rc)
    positions = torch.tensor(atoms.positions, requires_grad=True)
    cell = torch.tensor(atoms.cell[:])
    strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    deform = torch.eye(3, dtype=torch.float64) + strain
    energy = _lj_energy(positions @ deform, cell @ deform, pairs, sigma, epsilon, rc)
    d_positions, d_strain = torch.autograd.grad(energy, (positions, strain))
    stress = (d_strain / atoms.get_volume()).numpy()
    assert energy.item() == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(-d_positions.numpy(), atoms.get_forces(), atol=1e-12)
    np.testing.assert_allclose(stress, atoms.get_stress(voigt=False), atol=1e-12)

"""Structure validation, ASE round trips, Dataset operations and AtomsBatch packing."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list

from entangle.data import (
    MIN_DISTANCE,
    AtomsBatch,
    Dataset,
    Structure,
    matrix_to_voigt,
    voigt_to_matrix,
)
from entangle.data.atoms import closest_pair
from entangle.errors import ConfigError, DataError


def cu_structure(seed: int = 0, **labels) -> Structure:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.positions += 0.05 * np.random.default_rng(seed).standard_normal((4, 3))
    return Structure(positions=atoms.positions, numbers=atoms.numbers, cell=atoms.cell[:],
                     pbc=True, **labels)


def water_structure(**labels) -> Structure:
    atoms = molecule("H2O")
    return Structure(positions=atoms.positions, numbers=atoms.numbers, **labels)


# --------------------------------------------------------------------------------- validation
def test_structure_copies_and_freezes_arrays():
    positions = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]])
    s = Structure(positions=positions, numbers=[1, 1], energy=-31.7)
    positions[1, 2] = 5.0
    assert s.positions[1, 2] == 0.74
    assert s.positions.dtype == np.float64 and s.numbers.dtype == np.int64
    assert s.cell.shape == (3, 3) and not s.pbc.any()
    with pytest.raises(ValueError):
        s.positions[0, 0] = 1.0
    with pytest.raises(AttributeError):
        s.energy = 0.0


GOOD = dict(positions=[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], numbers=[14, 14],
            cell=2.7 * np.eye(3), pbc=True)


@pytest.mark.parametrize("changes, field", [
    (dict(positions=[[0.0, 0.0, 0.0], [1.0, 1.0, np.nan]]), "positions"),
    (dict(positions=[[0.0, 0.0, 0.0], [1.0, 1.0, np.inf]]), "positions"),
    (dict(positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.05]]), "positions"),
    (dict(positions=[[0.0, 0.0, 0.02], [0.0, 0.0, 2.67]]), "positions"),  # via the image
    (dict(positions=np.zeros((0, 3)), numbers=[]), "positions"),
    (dict(positions=[[0.0, 0.0], [1.0, 1.0]]), "positions"),
    (dict(positions=[["0", "0", "0"], ["1", "1", "1"]]), "positions"),
    (dict(numbers=[14, 0]), "numbers"),
    (dict(numbers=[14, 119]), "numbers"),
    (dict(numbers=[14.0, 14.0]), "numbers"),
    (dict(numbers=[14]), "numbers"),
    (dict(cell=np.zeros((3, 3))), "cell"),
    (dict(cell=[[2.7, 0, 0], [0, 2.7, 0], [2.7, 2.7, 0]]), "cell"),
    (dict(cell=np.diag([2.7, 2.7, 0.05])), "cell"),
    (dict(cell=np.eye(2)), "cell"),
    (dict(cell=np.diag([2.7, 2.7, np.nan])), "cell"),
    (dict(pbc=[True, False]), "pbc"),
    (dict(energy=float("nan")), "energy"),
    (dict(energy="-1.0"), "energy"),
    (dict(energy=10**400), "energy"),
    (dict(forces=np.zeros((3, 3))), "forces"),
    (dict(forces=[[0.0, 0.0, 0.0], [0.0, np.nan, 0.0]]), "forces"),
    (dict(stress=np.zeros(5)), "stress"),
    (dict(stress=np.zeros((3, 3))), "stress"),
    (dict(stress=np.zeros(6), pbc=[True, True, False]), "stress"),
    (dict(properties={"gap": float("nan")}), "properties"),
    (dict(properties={"gap": "wide"}), "properties"),
    (dict(weight=-1.0), "weight"),
    (dict(config_type=3), "config_type"),
])
def test_invalid_structures_raise_data_error_naming_source_index_field(changes, field):
    with pytest.raises(DataError) as info:
        Structure(**{**GOOD, **changes}, source="file.json", index=7)
    message = str(info.value)
    assert message.startswith("file.json: structure 7: ")
    assert field in message
    assert info.value.index == 7 and info.value.source == "file.json"


def test_mixed_pbc_needs_only_periodic_vectors():
    slab = Structure(positions=[[0.0, 0.0, 0.0], [1.0, 1.0, 5.0]], numbers=[29, 29],
                     cell=np.diag([2.5, 2.5, 0.0]), pbc=[True, True, False])
    assert slab.volume == 0.0
    with pytest.raises(DataError, match="singular"):
        Structure(positions=[[0.0, 0.0, 0.0]], numbers=[29], cell=np.diag([2.5, 2.5, 0.0]),
                  pbc=True)


def _random_system(rng, n, pbc, min_width):
    """Random atoms (some outside the cell) in a skewed cell at least ``min_width`` thick."""
    while True:
        cell = 3.0 * (np.eye(3) + 0.4 * rng.uniform(-1, 1, (3, 3)))
        if (1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)).min() >= min_width:
            break
    positions = rng.uniform(-0.3, 1.3, (n, 3)) @ cell
    cell[~np.asarray(pbc)] *= rng.integers(0, 2)  # sometimes zero along open directions
    return positions, cell, np.asarray(pbc)


@pytest.mark.parametrize("pbc", [[True] * 3, [True, False, True], [False, True, False],
                                 [False] * 3])
def test_closest_pair_agrees_with_ase_neighbour_list(pbc):
    """The fast overlap check finds a pair below the threshold exactly when ASE does."""
    rng = np.random.default_rng(42)
    threshold = 0.8  # large enough that random systems often have such pairs
    found = 0
    for _ in range(40):
        positions, cell, pbc_ = _random_system(rng, int(rng.integers(2, 12)), pbc, threshold)
        atoms = Atoms("H" * len(positions), positions=positions, cell=cell, pbc=pbc_)
        distances = neighbor_list("d", atoms, threshold)
        pair = closest_pair(positions, cell, pbc_, threshold)
        assert (pair is None) == (distances.size == 0)
        if pair is not None:
            found += 1
            i, j, d = pair
            assert d < threshold
            i_ase, j_ase, d_ase = neighbor_list("ijd", atoms, threshold)
            assert np.isclose(d, d_ase[(i_ase == i) & (j_ase == j)], atol=1e-9).any()
    assert found >= 5


def test_coincident_atoms_are_found():
    pair = closest_pair(np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [3.0, 1.0, 1.0]]),
                        np.zeros((3, 3)), np.zeros(3, bool), MIN_DISTANCE)
    assert pair is not None and {pair[0], pair[1]} == {0, 1} and pair[2] == 0.0


# ------------------------------------------------------------------------------------- ASE I/O
def test_ase_round_trip_keeps_everything():
    rng = np.random.default_rng(3)
    s = cu_structure(energy=-14.9, forces=rng.standard_normal((4, 3)),
                     stress=rng.standard_normal(6) * 1e-3, properties={"temperature": 300.0},
                     weight=2.0, config_type="bulk")
    atoms = s.to_ase()
    assert atoms.get_potential_energy() == -14.9
    np.testing.assert_array_equal(atoms.get_forces(), s.forces)
    np.testing.assert_array_equal(atoms.get_stress(), s.stress)
    back = Structure.from_ase(atoms)
    for name in ("positions", "numbers", "cell", "pbc", "forces", "stress"):
        np.testing.assert_array_equal(getattr(back, name), getattr(s, name))
    assert (back.energy, back.weight, back.config_type, back.properties) == (
        s.energy, s.weight, s.config_type, s.properties)


def test_from_ase_reads_3x3_stress_and_virial():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    matrix = np.array([[1.0, 0.1, 0.2], [0.1, 2.0, 0.3], [0.2, 0.3, 3.0]]) * 1e-3
    atoms.info["stress"] = matrix
    np.testing.assert_allclose(Structure.from_ase(atoms).stress, matrix_to_voigt(matrix))
    del atoms.info["stress"]
    atoms.info["virial"] = -matrix * atoms.get_volume()  # libAtoms: virial = -V sigma
    np.testing.assert_allclose(Structure.from_ase(atoms).stress,
                               [1e-3, 2e-3, 3e-3, 0.3e-3, 0.2e-3, 0.1e-3])
    atoms.info["virial"] = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(DataError, match="virial"):
        Structure.from_ase(atoms)


def test_voigt_matrix_round_trip_uses_ase_order():
    v = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    m = voigt_to_matrix(v)
    assert (m[1, 2], m[0, 2], m[0, 1]) == (4.0, 5.0, 6.0)
    np.testing.assert_array_equal(matrix_to_voigt(m), v)
    atoms = bulk("Cu", cubic=True)
    atoms.calc = SinglePointCalculator(atoms, stress=m)
    np.testing.assert_array_equal(atoms.get_stress(voigt=True), v)  # ASE's own conversion


def test_replace_validates_again():
    s = water_structure(energy=-14.2)
    assert s.replace(energy=-14.0).energy == -14.0
    with pytest.raises(DataError, match="energy"):
        s.replace(energy=float("inf"))


# ------------------------------------------------------------------------------------ Dataset
@pytest.fixture
def dataset() -> Dataset:
    items = [cu_structure(k, energy=-14.0 - k, config_type="bulk") for k in range(6)]
    items += [water_structure(energy=-14.2, config_type="molecule") for _ in range(4)]
    return Dataset(items, name="mixed")


def test_dataset_indexing(dataset):
    assert len(dataset) == 10
    assert isinstance(dataset[0], Structure) and dataset[-1] is dataset[9]
    assert isinstance(dataset[2:5], Dataset) and len(dataset[2:5]) == 3
    picked = dataset[np.array([4, 0, 4])]
    assert [s.energy for s in picked] == [-18.0, -14.0, -18.0]
    mask = np.zeros(10, bool)
    mask[[1, 8]] = True
    assert [s.config_type for s in dataset[mask]] == ["bulk", "molecule"]
    with pytest.raises(ConfigError):
        dataset[np.array([10])]
    with pytest.raises(ConfigError):
        dataset[np.ones(3, bool)]


def test_dataset_views(dataset):
    np.testing.assert_array_equal(dataset.species, [1, 8, 29])
    np.testing.assert_array_equal(dataset.n_atoms(), [4] * 6 + [3] * 4)
    np.testing.assert_array_equal(dataset.energies()[:3], [-14.0, -15.0, -16.0])
    with pytest.raises(DataError, match="structure 0: forces: structure has no forces"):
        dataset.forces()
    assert len(dataset.filter(config_type="molecule")) == 4
    assert len(dataset.filter(config_type=["bulk", "molecule"])) == 10
    assert len(dataset.filter(predicate=lambda s: s.n_atoms == 4)) == 6
    both = dataset + dataset[:2]
    assert len(both) == 12 and both[11] is dataset[1]
    assert len(Dataset.concatenate([dataset, dataset, dataset])) == 30


@pytest.mark.parametrize("sizes, expected", [([0.8, 0.2], [8, 2]), ([0.5, 0.25], [5, 2]),
                                             ([3, 3, 4], [3, 3, 4]), ([2, 5], [2, 5])])
def test_split_is_disjoint_sized_and_reproducible(dataset, sizes, expected):
    parts = dataset.split(sizes, seed=1)
    assert [len(p) for p in parts] == expected
    ids = [id(s) for p in parts for s in p]
    assert len(set(ids)) == len(ids)
    again = dataset.split(sizes, seed=1)
    assert [[id(s) for s in p] for p in parts] == [[id(s) for s in p] for p in again]
    other = dataset.split(sizes, seed=2)
    assert [[id(s) for s in p] for p in parts] != [[id(s) for s in p] for p in other]


@pytest.mark.parametrize("sizes", [[0.8, 0.3], [11], [-1, 2], [], [float("nan")]])
def test_bad_split_sizes(dataset, sizes):
    with pytest.raises(ConfigError):
        dataset.split(sizes, seed=0)


def test_dataset_ase_round_trip(dataset):
    back = Dataset.from_ase(dataset.to_ase(), name="back")
    np.testing.assert_array_equal(back.energies(), dataset.energies())
    assert [s.config_type for s in back] == [s.config_type for s in dataset]
    assert back[3].index == 3 and back[3].source == "back"


def test_dataset_rejects_non_structures():
    with pytest.raises(DataError, match="structure 1"):
        Dataset([water_structure(), "H2O"])


# ---------------------------------------------------------------------------------- AtomsBatch
def test_atoms_batch_packs_structures(dataset):
    rng = np.random.default_rng(0)
    items = [cu_structure(0, energy=-1.0, forces=rng.standard_normal((4, 3)),
                          stress=np.arange(6.0) * 1e-3),
             water_structure(), water_structure(energy=-2.0, weight=0.5)]
    batch = AtomsBatch.from_structures(items)
    assert batch.n_structures == 3
    assert batch.positions.shape == (10, 3) and batch.positions.dtype == torch.float64
    assert batch.cell.shape == (3, 3, 3) and batch.pbc.tolist()[1] == [False] * 3
    assert batch.ptr.tolist() == [0, 4, 7, 10]
    assert batch.batch.tolist() == [0] * 4 + [1] * 3 + [2] * 3
    assert batch.n_atoms.tolist() == [4, 3, 3]
    assert batch.energy_mask.tolist() == [True, False, True]
    assert batch.energy.tolist() == [-1.0, 0.0, -2.0]
    assert batch.forces_mask.tolist() == [True, False, False]
    np.testing.assert_array_equal(batch.forces[:4].numpy(), items[0].forces)
    assert not batch.forces[4:].any()
    assert batch.stress_mask.tolist() == [True, False, False]
    assert batch.weight.tolist() == [1.0, 1.0, 0.5]
    np.testing.assert_array_equal(batch.numbers[4:7].numpy(), [8, 1, 1])
    single = batch.to(dtype=torch.float32)
    assert single.positions.dtype == torch.float32 and single.numbers.dtype == torch.int64
    assert AtomsBatch.from_structures(dataset[:2], dtype=torch.float32).cell.dtype == \
        torch.float32
    with pytest.raises(DataError):
        AtomsBatch.from_structures([])
    with pytest.raises(ConfigError):
        AtomsBatch.from_structures(items, dtype=torch.int32)

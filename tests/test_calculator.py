"""ASE calculator protocol of ETNCalculator: properties, cache, errors, MD and relaxation."""

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_stress
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from ase import units

from entangle import io
from entangle.calculator import ETNCalculator
from entangle.errors import DataError
from entangle.models.etn import ETNConfig, ETNPotential


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = ETNPotential(ETNConfig(species=[29, 79], n_rad=5, d=3, L=2, spec_rank=2,
                                   rad_rank=2, ett_rank=2, r_cut=4.5, r_min=1.5,
                                   feature_scale=20.0, reference_energies=[-3.5, -3.8],
                                   seed=4))
    path = tmp_path_factory.mktemp("etn")
    io.save(model, path / "model")
    return path


def cuau():
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 1))
    atoms.numbers[::3] = 79
    atoms.rattle(0.05, seed=1)
    return atoms


def test_properties_match_model_and_finite_differences(model_dir):
    atoms = cuau()
    calc = ETNCalculator(model_dir)
    atoms.calc = calc
    e = atoms.get_potential_energy()
    assert atoms.get_potential_energy(force_consistent=True) == e
    f = atoms.get_forces()
    s = atoms.get_stress()
    assert f.shape == (len(atoms), 3) and s.shape == (6,)
    assert np.isfinite(f).all() and np.isfinite(s).all()
    for i in (0, 5):
        for a in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.calc = calc
                moved.positions[i, a] += sign * 1e-5
                energies.append(moved.get_potential_energy())
            assert -(energies[0] - energies[1]) / 2e-5 == pytest.approx(f[i, a], abs=1e-7)
    # ASE's own finite-difference stress
    s_num = calculate_numerical_stress(atoms, eps=1e-5)
    assert np.allclose(s_num, s, atol=1e-8)


def test_results_are_cached(model_dir, monkeypatch):
    atoms = cuau()
    calc = ETNCalculator(model_dir)
    atoms.calc = calc
    atoms.get_forces()
    calls = []
    monkeypatch.setattr(calc.model, "forward", lambda *a, **k: calls.append(1))
    atoms.get_potential_energy()
    atoms.get_stress()
    assert calls == []  # served from the cache
    atoms.positions[0, 0] += 0.01
    with pytest.raises(TypeError):  # recomputes (and the patched forward returns None)
        atoms.get_potential_energy()


def test_unknown_species_is_a_clear_error(model_dir):
    atoms = cuau()
    atoms.numbers[0] = 47
    atoms.calc = ETNCalculator(model_dir)
    with pytest.raises(DataError, match="Ag"):
        atoms.get_potential_energy()


def test_stress_of_molecule_is_not_implemented(model_dir):
    atoms = cuau()
    atoms.pbc = False
    atoms.calc = ETNCalculator(model_dir)
    assert np.isfinite(atoms.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_nve_md_conserves_energy_and_relaxation_lowers_it(model_dir):
    atoms = cuau()
    atoms.calc = ETNCalculator(model_dir)
    rng = np.random.default_rng(0)
    atoms.set_velocities(rng.normal(scale=0.02, size=(len(atoms), 3)))
    etot = lambda: atoms.get_potential_energy() + atoms.get_kinetic_energy()  # noqa: E731
    e0 = etot()
    VelocityVerlet(atoms, 1.0 * units.fs).run(20)
    assert abs(etot() - e0) / len(atoms) < 1e-4
    e_before = atoms.get_potential_energy()
    BFGS(atoms, logfile=None).run(fmax=1e-6, steps=10)
    assert atoms.get_potential_energy() < e_before

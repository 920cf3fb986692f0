"""The on-the-fly pair forces of the ETN (per-l radial contractions, no stored Jacobian)
agree with the stored-Jacobian path and with autograd, for radial channel counts that differ
per l (the Mo example model's decay) and for two species."""

import numpy as np
import pytest
import torch
from ase.build import bulk

from entangle.data import AtomsBatch, Structure, neighbour_list
from entangle.models.etn import ETNConfig, ETNPotential


@pytest.fixture(scope="module")
def cuau() -> Structure:
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 1))
    atoms.numbers[[1, 4, 6, 9, 13]] = 79
    atoms.rattle(0.12, seed=5)
    return Structure(positions=atoms.positions, numbers=atoms.numbers,
                     cell=np.array(atoms.cell), pbc=True)


@pytest.mark.parametrize("L", [1, 2, 3])
def test_on_the_fly_forces_match_jacobian_and_autograd(cuau, L):
    cfg = ETNConfig(species=[29, 79], n_rad=10, d=3, L=L, spec_rank=2, rad_rank=5, ett_rank=3,
                    decay_rad=2.0, r_cut=4.6, r_min=1.5, feature_scale=20.0, init_scale=0.3)
    model = ETNPotential(cfg)
    assert L == 1 or len(set(model.channels["n_rad"])) > 1
    batch = AtomsBatch.from_structures([cuau])
    nbrs = neighbour_list(batch, cfg.r_cut)
    with torch.no_grad():
        fly = model.evaluate(model.geometry(batch, nbrs), forces=True, stress=True)
        jac = model.evaluate(model.geometry(batch, nbrs, jacobian=True), forces=True,
                             stress=True)
    for key in ("energy", "forces", "stress"):
        assert torch.allclose(fly[key], jac[key], rtol=1e-12, atol=1e-12), key
    # a central finite difference of the energy for one atom
    with torch.no_grad():
        eps, k = 1e-5, 7
        num = torch.zeros(3, dtype=torch.float64)
        for a in range(3):
            for sign in (1.0, -1.0):
                positions = cuau.positions.copy()
                positions[k, a] += sign * eps
                shifted = AtomsBatch.from_structures([Structure(
                    positions=positions, numbers=cuau.numbers, cell=cuau.cell, pbc=True)])
                e = model(shifted, nbrs, forces=False)["energy"].sum()
                num[a] -= sign * e / (2 * eps)
    assert torch.allclose(fly["forces"][k], num, rtol=1e-6, atol=1e-7)
    assert fly["forces"].abs().max() > 1e-3

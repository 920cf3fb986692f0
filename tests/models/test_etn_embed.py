"""Growing an ETN: a trained smaller model embedded in a larger one computes the same
energies, forces and stress, and the new channels can train."""

import numpy as np
import pytest
import torch
from ase.build import bulk

from entangle.data import AtomsBatch, Structure, neighbour_list
from entangle.errors import ConfigError
from entangle.models.etn import ETNConfig, ETNPotential


def structures() -> list[Structure]:
    out = []
    for seed in range(3):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
        atoms.numbers[[1, 4, 6 - seed]] = 79
        atoms.rattle(0.2, seed=seed)
        out.append(Structure(positions=atoms.positions, numbers=atoms.numbers,
                             cell=np.array(atoms.cell), pbc=True))
    return out


def etn(**kw) -> ETNPotential:
    base = dict(species=[29, 79], n_rad=5, d=3, L=2, spec_rank=1, rad_rank=2, ett_rank=2,
                r_cut=4.5, r_min=1.0, decay_rad=2.0, seed=0)
    return ETNPotential(ETNConfig(**{**base, **kw}))


def standardized(model: ETNPotential, data: list[Structure]) -> ETNPotential:
    batch = AtomsBatch.from_structures(data)
    model.standardize([model.geometry(batch, neighbour_list(batch, model.config.r_cut),
                                      derivatives=False)])
    return model


def trained_small(data) -> ETNPotential:
    small = standardized(etn(seed=1, init_scale=0.5), data)
    with torch.no_grad():  # a generic trained-looking model: every coefficient nonzero
        for p in small.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7),
                                     dtype=p.dtype))
    return small


GROWN = dict(n_rad=7, L=3, spec_rank=2, rad_rank=3, ett_rank=3, seed=5)


@pytest.mark.parametrize("d", [3, 5])  # same order, and two extra cores passing the value
def test_embedded_model_reproduces_the_small_one(d):
    data = structures()
    small = trained_small(data)
    big = standardized(etn(**GROWN, d=d), data[:1])  # other data: the copy must win
    big.embed(small, padding_scale=0.0)
    assert big.n_parameters() > 2 * small.n_parameters()
    for want, got in zip(small.predict(data, stress=True), big.predict(data, stress=True)):
        for key in ("energy", "forces", "stress"):
            assert np.allclose(got[key], want[key], rtol=1e-11, atol=1e-11), key
            assert np.abs(want[key]).max() > 1e-3  # a nontrivial comparison


@pytest.mark.parametrize("d", [3, 4])
def test_padding_is_small_and_every_new_coefficient_trains(d):
    data = structures()
    small = trained_small(data)
    big = standardized(etn(**GROWN, d=d), data)
    big.embed(small)  # default padding
    want = np.array([out["energy"] for out in small.predict(data)])
    got = np.array([out["energy"] for out in big.predict(data)])
    per_atom = np.abs(got - want) / 8
    assert 0 < per_atom.max() < 1e-3
    batch = AtomsBatch.from_structures(data)
    out = big(batch, neighbour_list(batch, big.config.r_cut), forces=True)
    (out["energy"].pow(2).sum() + out["forces"].pow(2).sum()).backward()
    for k, core in enumerate(big.cores):
        # no structural zeros: every coefficient of the grown cores has a gradient
        assert int((core.grad == 0).sum()) == 0, k
    for l in range(3):
        assert bool((big.B[l].grad != 0).all()), l


@pytest.mark.parametrize("change, match", [
    (dict(r_cut=5.0), "r_cut"), (dict(d=2), "d=3 into one with d=2"), (dict(L=1), "L=2"),
    (dict(rad_rank=1), "rad_rank"), (dict(species=[29]), "species"),
])
def test_incompatible_models_are_refused(change, match):
    small, big = etn(), etn(**{**GROWN, **change})
    before = [p.clone() for p in big.parameters()]
    with pytest.raises(ConfigError, match=match):
        big.embed(small)
    assert all(torch.equal(a, b) for a, b in zip(before, big.parameters()))  # untouched


def test_an_extra_core_without_a_scalar_bond_sector_is_refused():
    small = etn(d=2)
    big = etn(**GROWN, d=4, bonds=[[[0, 1, 3], [1, -1, 3]], [[0, 1, 2], [1, -1, 2]],
                                   [[1, -1, 2]]])
    before = [p.clone() for p in big.parameters()]
    with pytest.raises(ConfigError, match="core 2 has no scalar"):
        big.embed(small)
    assert all(torch.equal(a, b) for a, b in zip(before, big.parameters()))


def test_a_core_that_does_not_fit_the_bonds_is_refused_before_any_change():
    small, big = etn(ett_rank=3), etn(**GROWN, bonds=[[[0, 1, 1], [1, -1, 1]]] * 2)
    before = [p.clone() for p in big.parameters()]
    with pytest.raises(ConfigError, match="does not fit this ETN's bonds"):
        big.embed(small)
    assert all(torch.equal(a, b) for a, b in zip(before, big.parameters()))

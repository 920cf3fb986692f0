"""Fixtures of the descriptor tests."""

import pytest
from descriptor_samples import cuau_cell, molecule, triclinic_cell

from entangle.data import Structure


@pytest.fixture
def cuau() -> Structure:
    return Structure.from_ase(cuau_cell())


@pytest.fixture
def triclinic() -> Structure:
    return Structure.from_ase(triclinic_cell())


@pytest.fixture
def cluster() -> Structure:
    return Structure.from_ase(molecule())

"""The ``>>>`` examples in the entangle.data docstrings run and print what they claim."""

import doctest

import pytest

import entangle.data.atoms
import entangle.data.neighbours


@pytest.mark.parametrize("module", [entangle.data.atoms, entangle.data.neighbours])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

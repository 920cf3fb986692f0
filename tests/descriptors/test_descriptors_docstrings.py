"""The ``>>>`` examples in the descriptors docstrings run and print what they claim."""

import doctest

import pytest

import entangle.descriptors
import entangle.descriptors.radial
import entangle.descriptors.soap


@pytest.mark.parametrize("module", [entangle.descriptors, entangle.descriptors.radial,
                                    entangle.descriptors.soap])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

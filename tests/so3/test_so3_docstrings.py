"""The ``>>>`` examples in the so3 docstrings run and print what they claim."""

import doctest

import pytest

import entangle.so3.harmonics
import entangle.so3.irreps
import entangle.so3.wigner


@pytest.mark.parametrize("module", [entangle.so3.harmonics, entangle.so3.wigner,
                                    entangle.so3.irreps])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

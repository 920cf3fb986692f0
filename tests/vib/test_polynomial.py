import math

import pytest
import torch

from entangle.errors import ConfigError, DataError, ShapeError
from entangle.vib import PolynomialTT


def test_from_terms_evaluates_the_polynomial():
    terms = [(0.5, (2, 0, 0)), (0.7, (0, 2, 0)), (1.1, (0, 0, 2)), (-0.3, (1, 1, 1)), (0.05, (4, 0, 0)),
             (0.2, (0, 1, 3)), (2.0, (0, 0, 0))]
    field = PolynomialTT.from_terms(terms)
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    direct = sum(c * math.prod(x[:, i] ** p for i, p in enumerate(powers)) for c, powers in terms)
    assert torch.allclose(field(x), direct, rtol=1e-12, atol=1e-12)
    assert field.degree == 4
    # rounding removes the redundant directions of the 7 stacked rank-1 terms
    assert max(c.shape[2] for c in field.cores[:-1]) < len(terms)


def test_rotated_coordinates():
    theta = 0.3
    U = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=torch.float64)
    field = PolynomialTT.from_terms([(1.0, (2, 0)), (3.0, (1, 1))], U=U)
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    q = x @ U
    assert torch.allclose(field(x), q[:, 0] ** 2 + 3.0 * q[:, 0] * q[:, 1])


def test_bad_input():
    with pytest.raises(ConfigError):
        PolynomialTT.from_terms([])
    with pytest.raises(ConfigError):
        PolynomialTT.from_terms([(1.0, (2, 0)), (1.0, (1,))])
    with pytest.raises(ConfigError):
        PolynomialTT.from_terms([(1.0, (-1, 0))])
    with pytest.raises(DataError):
        PolynomialTT.from_terms([(float("nan"), (1, 0))])
    with pytest.raises(DataError):
        PolynomialTT.from_terms([(1.0, (1, 0))], U=torch.ones(2, 2, dtype=torch.float64))
    with pytest.raises(ShapeError):
        PolynomialTT([torch.ones(1, 3, 2), torch.ones(2, 2, 1)])
    with pytest.raises(ShapeError):
        PolynomialTT.from_terms([(1.0, (1, 0))])(torch.ones(3, 3))

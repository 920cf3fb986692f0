"""Tests of entangle.so3.irreps: parsing, sizes, layout, and the representation matrices."""

import pytest
import torch

from entangle.errors import ConfigError, ShapeError
from entangle.so3 import Irreps, MulIrrep, random_rotation, real_spherical_harmonics

F64 = torch.float64


def test_parse_and_format():
    irreps = Irreps(" 4x0e + 2x1o+1x2e ")
    assert list(irreps) == [MulIrrep(4, 0, 1), MulIrrep(2, 1, -1), MulIrrep(1, 2, 1)]
    assert str(irreps) == "4x0e+2x1o+1x2e"
    assert repr(irreps) == "Irreps('4x0e+2x1o+1x2e')"
    assert Irreps(str(irreps)) == irreps
    assert str(Irreps("1o+2e")) == "1x1o+1x2e"
    assert str(Irreps("3x2+1")) == "3x2+1x1" and not Irreps("3x2").has_parity
    assert len(Irreps("")) == 0 and Irreps("").dim == 0
    assert Irreps([(2, 1), (3, 0)]) == "2x1+3x0"
    assert Irreps(["2x1o", (1, 3, 1)]) == Irreps("2x1o+1x3e")
    assert Irreps(irreps) == irreps


@pytest.mark.parametrize("bad", ["4x", "x1o", "2x1q", "1o+", "-1x2e", "2y1e", "1.5x1o"])
def test_bad_strings(bad):
    with pytest.raises(ConfigError):
        Irreps(bad)


def test_bad_entries():
    with pytest.raises(ConfigError, match="mixes"):
        Irreps("1x0e+1x1")
    for bad in [(1, -1), (-2, 1), (1, 1, 2), (1.0, 1), ("a",), 3]:
        with pytest.raises(ConfigError):
            Irreps([bad])


def test_value_semantics():
    a, b = Irreps("2x0e+1x1o"), Irreps("2x0e+1x1o")
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert a != Irreps("2x0e+1x1e") and a != "nonsense" and a != 3
    assert a + "1x2e" == Irreps("2x0e+1x1o+1x2e")
    assert a[1] == MulIrrep(1, 1, -1) and a[1:] == Irreps("1x1o")
    with pytest.raises(AttributeError):
        a._entries = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        a.dim = 3  # type: ignore[misc]
    assert a == b


def test_sizes_and_slices():
    irreps = Irreps("4x0e+2x1o+3x2e")
    assert irreps.dim == 4 + 6 + 15
    assert irreps.num_irreps == 9
    assert irreps.ls == (0, 0, 0, 0, 1, 1, 2, 2, 2)
    assert irreps.lmax == 2
    assert irreps.slices() == (slice(0, 4), slice(4, 10), slice(10, 25))
    assert [e.dim for e in irreps] == [4, 6, 15] and irreps[2].ir_dim == 5
    with pytest.raises(ConfigError):
        Irreps("").lmax  # noqa: B018


def test_simplify_keeps_layout():
    irreps = Irreps("1x1o+2x1o+0x2e+1x0e+1x0e+1x1o")
    assert irreps.simplify() == Irreps("3x1o+2x0e+1x1o")
    assert irreps.simplify().dim == irreps.dim


def test_split_join_layout_is_channel_major():
    irreps = Irreps("2x0e+2x1o")
    x = torch.arange(2 * 8, dtype=F64).reshape(2, 8)
    scalars, vectors = irreps.split(x)
    assert scalars.shape == (2, 2, 1) and vectors.shape == (2, 2, 3)
    torch.testing.assert_close(vectors[1, 1], torch.tensor([13.0, 14.0, 15.0], dtype=F64))
    torch.testing.assert_close(irreps.join([scalars, vectors]), x)
    with pytest.raises(ShapeError):
        irreps.split(torch.zeros(2, 7))
    with pytest.raises(ShapeError):
        irreps.join([scalars])
    with pytest.raises(ShapeError):
        irreps.join([scalars, vectors.transpose(-1, -2)])


def test_D_from_matrix_rotates_spherical_harmonics():
    irreps = Irreps.spherical_harmonics(6)
    assert irreps == "1x0e+1x1o+1x2e+1x3o+1x4e+1x5o+1x6e"
    g = torch.Generator().manual_seed(1)
    rot = random_rotation(g, shape=(3,))
    rot = torch.cat([rot, -rot[:1]])  # one improper rotation
    v = torch.randn(10, 3, generator=g, dtype=F64)
    y = real_spherical_harmonics(v, 6)
    y_rot = real_spherical_harmonics(torch.einsum("rij,nj->rni", rot, v), 6)
    m = irreps.D_from_matrix(rot)
    assert m.shape == (4, 49, 49)
    torch.testing.assert_close(y_rot, torch.einsum("rab,nb->rna", m, y), atol=1e-12, rtol=0)


def test_D_from_matrix_parity_and_multiplicity():
    irreps = Irreps("2x1o+1x1e+1x0o")
    a, b, c = torch.randn(3, 3, generator=torch.Generator().manual_seed(4), dtype=F64)
    # two polar vectors, one axial vector (a x b), one pseudo-scalar (a x b) . c
    axial = torch.cross(a, b, dim=0)
    pseudo = torch.dot(axial, c).reshape(1)
    yzx = [1, 2, 0]
    x = torch.cat([a[yzx], b[yzx], axial[yzx], pseudo])
    for rot in (random_rotation(8), -random_rotation(9)):
        ra, rb, rc = rot @ a, rot @ b, rot @ c
        ax = torch.cross(ra, rb, dim=0)
        expected = torch.cat([ra[yzx], rb[yzx], ax[yzx], torch.dot(ax, rc).reshape(1)])
        torch.testing.assert_close(irreps.D_from_matrix(rot) @ x, expected)
    with pytest.raises(ConfigError, match="parity"):
        Irreps("1x1").D_from_matrix(-torch.eye(3, dtype=F64))
    torch.testing.assert_close(Irreps("1x1").D_from_matrix(torch.eye(3, dtype=F64)),
                               torch.eye(3, dtype=F64))

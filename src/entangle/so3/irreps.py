"""``Irreps``: bookkeeping of feature vectors made of irreducible representations of O(3)/SO(3).

An :class:`Irreps` is an immutable sequence of entries ``(mul, l, p)``: ``mul`` copies
(channels) of the irrep of degree ``l`` and parity ``p`` (``+1`` even ``"e"``, ``-1`` odd
``"o"``, or ``None`` for SO(3)-only bookkeeping; all entries of one ``Irreps`` either have a
parity or none has). It reads and writes strings like ``"4x0e+2x1o+1x2e"`` (``"1x"`` may be
left out; ``"4x0+2x1"`` has no parity).

Layout
------
A feature tensor ``x`` of an ``Irreps`` has shape ``(..., irreps.dim)`` and is the
concatenation of one block per entry, in order; the block of entry ``(mul, l, p)`` is a
``(mul, 2l+1)`` array flattened row-major, i.e. **channel-major, m fastest**:
``x[..., offset + u * (2l + 1) + (m + l)]`` is channel ``u``, component ``m`` (the real
harmonic order of :func:`~entangle.so3.real_spherical_harmonics`). :meth:`Irreps.split`
returns these blocks as ``(..., mul, 2l+1)`` views and :meth:`Irreps.join` inverts it.

Under an orthogonal ``R`` a block transforms with ``D_l(R)`` (times ``p`` if ``det R = -1``),
so ``x -> x @ irreps.D_from_matrix(R).T``; the harmonics ``Y_l`` transform as ``(l, (-1)^l)``,
see :meth:`Irreps.spherical_harmonics`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import torch

from entangle.errors import ConfigError, ShapeError
from entangle.so3.wigner import _check_rotation, wigner_D

__all__ = ["Irreps", "MulIrrep"]

_ENTRY = re.compile(r"^(?:(\d+)\s*x\s*)?(\d+)([eo]?)$")


class MulIrrep(NamedTuple):
    """``mul`` copies of the irrep of degree ``l`` and parity ``p`` (+1, -1 or None)."""

    mul: int
    l: int
    p: int | None = None

    @property
    def ir_dim(self) -> int:
        """Dimension ``2l + 1`` of one copy."""
        return 2 * self.l + 1

    @property
    def dim(self) -> int:
        """Dimension ``mul * (2l + 1)`` of the block."""
        return self.mul * (2 * self.l + 1)

    def __str__(self) -> str:
        parity = {1: "e", -1: "o", None: ""}[self.p]
        return f"{self.mul}x{self.l}{parity}"


def _parse(text: str) -> tuple[MulIrrep, ...]:
    text = text.strip()
    if not text:
        return ()
    entries = []
    for part in text.split("+"):
        match = _ENTRY.match(part.strip())
        if match is None:
            raise ConfigError(f"cannot parse irreps {text!r}: bad entry {part.strip()!r} "
                              "(expected e.g. '4x1o', '2e' or '3x2')")
        mul, l, parity = match.groups()
        entries.append(MulIrrep(1 if mul is None else int(mul), int(l),
                                {"e": 1, "o": -1, "": None}[parity]))
    return tuple(entries)


def _entry(item: object) -> MulIrrep:
    if isinstance(item, str):
        parsed = _parse(item)
        if len(parsed) != 1:
            raise ConfigError(f"expected a single irreps entry, got {item!r}")
        return parsed[0]
    if isinstance(item, tuple) and len(item) in (2, 3):
        mul, l, *rest = item
        p = rest[0] if rest else None
        for name, value in (("mul", mul), ("l", l)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"irreps entry {item!r}: {name} must be a non-negative int")
        if p not in (1, -1, None) or isinstance(p, bool):
            raise ConfigError(f"irreps entry {item!r}: parity must be +1, -1 or None")
        return MulIrrep(mul, l, p)
    raise ConfigError(f"cannot read an irreps entry from {item!r}; use (mul, l), (mul, l, p) "
                      "or a string like '2x1o'")


class Irreps:
    """Immutable sequence of ``(mul, l, p)`` entries; see the module docstring for the layout.

    Parameters
    ----------
    spec : a string ``"4x0e+2x1o"``, another ``Irreps``, or an iterable of ``(mul, l)`` /
        ``(mul, l, p)`` tuples or entry strings.

    Examples
    --------
    >>> irreps = Irreps("4x0e+2x1o+1x2e")
    >>> irreps.dim, irreps.lmax, str(irreps[1])
    (15, 2, '2x1o')
    >>> [s.start for s in irreps.slices()]
    [0, 4, 10]
    >>> irreps == Irreps([(4, 0, 1), (2, 1, -1), (1, 2, 1)])
    True
    """

    __slots__ = ("_entries",)
    _entries: tuple[MulIrrep, ...]

    def __init__(self, spec: str | Irreps | Iterable[object] = ()):
        if isinstance(spec, Irreps):
            entries = spec._entries
        elif isinstance(spec, str):
            entries = _parse(spec)
        else:
            entries = tuple(_entry(item) for item in spec)
        if len({e.p is None for e in entries}) > 1:
            raise ConfigError(f"irreps {'+'.join(map(str, entries))!r} mixes entries with and "
                              "without parity")
        object.__setattr__(self, "_entries", entries)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Irreps is immutable; cannot set {name!r}")

    @classmethod
    def spherical_harmonics(cls, l_max: int, parity: bool = True) -> Irreps:
        """``1x0e+1x1o+1x2e+...`` up to ``l_max``: the irreps of ``real_spherical_harmonics``."""
        if isinstance(l_max, bool) or not isinstance(l_max, int) or l_max < 0:
            raise ConfigError(f"l_max must be a non-negative int, got {l_max!r}")
        return cls([(1, l, (-1) ** l if parity else None) for l in range(l_max + 1)])

    # value-type protocol
    def __iter__(self) -> Iterator[MulIrrep]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int | slice) -> MulIrrep | Irreps:
        if isinstance(index, slice):
            return Irreps(self._entries[index])
        return self._entries[index]

    def __add__(self, other: Irreps | str) -> Irreps:
        return Irreps(self._entries + Irreps(other)._entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = Irreps(other)
            except ConfigError:
                return False
        return isinstance(other, Irreps) and self._entries == other._entries

    def __hash__(self) -> int:
        return hash(self._entries)

    def __str__(self) -> str:
        return "+".join(str(e) for e in self._entries)

    def __repr__(self) -> str:
        return f"Irreps({str(self)!r})"

    # sizes
    @property
    def dim(self) -> int:
        """Length of a feature vector: ``Σ mul (2l + 1)``."""
        return sum(e.dim for e in self._entries)

    @property
    def num_irreps(self) -> int:
        """Number of irreps counted with multiplicity: ``Σ mul``."""
        return sum(e.mul for e in self._entries)

    @property
    def ls(self) -> tuple[int, ...]:
        """The ``l`` of every irrep, each repeated ``mul`` times (in layout order)."""
        return tuple(e.l for e in self._entries for _ in range(e.mul))

    @property
    def lmax(self) -> int:
        """Largest ``l``; :class:`ConfigError` for empty irreps."""
        if not self._entries:
            raise ConfigError("empty irreps have no lmax")
        return max(e.l for e in self._entries)

    @property
    def has_parity(self) -> bool:
        """True when the entries carry a parity (O(3)), False for SO(3)-only irreps."""
        return bool(self._entries) and self._entries[0].p is not None

    def slices(self) -> tuple[slice, ...]:
        """Slice of the last axis of a feature tensor that holds each entry's block."""
        out, start = [], 0
        for e in self._entries:
            out.append(slice(start, start + e.dim))
            start += e.dim
        return tuple(out)

    def simplify(self) -> Irreps:
        """Merge neighbouring entries with equal ``(l, p)`` and drop ``mul = 0`` entries.

        The layout of a feature tensor is unchanged (blocks of equal irreps side by side are
        one channel-major block).
        """
        merged: list[MulIrrep] = []
        for e in self._entries:
            if e.mul == 0:
                continue
            if merged and (merged[-1].l, merged[-1].p) == (e.l, e.p):
                merged[-1] = MulIrrep(merged[-1].mul + e.mul, e.l, e.p)
            else:
                merged.append(e)
        return Irreps(merged)

    # tensors
    def split(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Blocks of a feature tensor as views of shape ``(..., mul, 2l+1)``, one per entry.

        Parameters
        ----------
        features : (..., dim) tensor.
        """
        if features.ndim < 1 or features.shape[-1] != self.dim:
            raise ShapeError(f"features of irreps {self} must have shape (..., {self.dim}), "
                             f"got {tuple(features.shape)}")
        return [features[..., s].unflatten(-1, (e.mul, e.ir_dim))
                for e, s in zip(self._entries, self.slices())]

    def join(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`split`: blocks ``(..., mul, 2l+1)`` to a ``(..., dim)`` tensor."""
        if len(blocks) != len(self._entries):
            raise ShapeError(f"irreps {self} has {len(self._entries)} blocks, got {len(blocks)}")
        for e, b in zip(self._entries, blocks):
            if b.ndim < 2 or tuple(b.shape[-2:]) != (e.mul, e.ir_dim):
                raise ShapeError(f"block of {e} must have shape (..., {e.mul}, {e.ir_dim}), "
                                 f"got {tuple(b.shape)}")
        return torch.cat([b.flatten(-2) for b in blocks], dim=-1)  # [..., dim]

    def D_from_matrix(self, rotation: torch.Tensor) -> torch.Tensor:
        """Block-diagonal representation matrix of an orthogonal ``R``.

        Each copy of ``(l, p)`` gets ``D_l(R')`` with ``R' = det(R) R`` proper, times ``p`` when
        ``det R = -1``. Irreps without parity accept proper rotations only.

        Parameters
        ----------
        rotation : (..., 3, 3) orthogonal matrices.

        Returns
        -------
        (..., dim, dim) tensor ``M`` with ``x(R) = M x`` for features laid out as above.
        """
        _check_rotation(rotation)
        det = torch.linalg.det(rotation)  # [...]
        improper = det < 0  # [...]
        if not self.has_parity and bool(improper.any()):
            raise ConfigError(f"irreps {self} have no parity; improper rotations need e.g. "
                              "'1x1o' instead of '1x1'")
        proper = rotation * torch.sign(det)[..., None, None]  # [..., 3, 3]
        batch = rotation.shape[:-2]
        out = rotation.new_zeros(*batch, self.dim, self.dim)  # [..., dim, dim]
        cache: dict[int, torch.Tensor] = {}
        start = 0
        for e in self._entries:
            if e.l not in cache:
                cache[e.l] = wigner_D(e.l, proper)  # [..., 2l+1, 2l+1]
            d = cache[e.l]
            if e.p is not None:
                d = torch.where(improper[..., None, None], e.p * d, d)
            for _ in range(e.mul):
                out[..., start:start + e.ir_dim, start:start + e.ir_dim] = d
                start += e.ir_dim
        return out

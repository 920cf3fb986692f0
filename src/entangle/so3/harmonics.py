"""Real spherical harmonics, evaluated by a Cartesian recursion on the direction vector.

Convention
----------
The real (tesseral) harmonics are those of Hodapp & Shapeev, *Equivariant tensor network
potentials*, Eq. (8), built from the complex harmonics :math:`Y_l^m` *with* the
Condon–Shortley phase (the ones of ``scipy.special.sph_harm_y`` and ``sympy.Ynm``)::

    m < 0:  Y_{l,m} = sqrt(2) (-1)^m Im Y_l^{|m|} = sqrt(2) K_l^{|m|} P_l^{|m|}(cos θ) sin(|m| φ)
    m = 0:  Y_{l,0} = Y_l^0                       =         K_l^0     P_l(cos θ)
    m > 0:  Y_{l,m} = sqrt(2) (-1)^m Re Y_l^m     = sqrt(2) K_l^m     P_l^m(cos θ)     cos(m φ)

with :math:`K_l^m = \\sqrt{(2l+1)/(4π) \\, (l-m)!/(l+m)!}` and :math:`P_l^m` the associated
Legendre function *without* the Condon–Shortley phase (so the phase cancels: no real harmonic
carries a ``(-1)^m``). Hence ``m > 0`` is the cosine (``x``-like) and ``m < 0`` the sine
(``y``-like) component, e.g. ``Y_1 = sqrt(3 / 4π) (y, z, x)``. This is the common "real form"
(e.g. the tables of real harmonics in Wikipedia); SOAP power spectra do not depend on it.
The functions are orthonormal on the unit sphere (``∫ Y_{lm} Y_{l'm'} dΩ = δ_ll' δ_mm'``),
``Y_l(-r) = (-1)^l Y_l(r)``, and
``Y_l(R r) = D_l(R) Y_l(r)`` with the real Wigner matrices of :mod:`entangle.so3.wigner`.

Ordering: component ``l * l + l + m`` for ``m = -l .. l``, ``l = 0 .. l_max``.

Algorithm
---------
With ``c_m + i s_m = (x + i y)^m`` and the homogeneous polynomials
``q_l^m(z, r²) = r^(l-m) d^m P_l/dx^m (z / r)``, the solid harmonic is
``r^l Y_{l,±m} ∝ q_l^m (c_m | s_m)``. Both factors obey three-term recursions in Cartesian
form (no angles, hence no singularity at the poles):

* ``c_{m+1} = x c_m - y s_m``,  ``s_{m+1} = x s_m + y c_m``;
* ``(l - m) q_l^m = (2l - 1) z q_{l-1}^m - (l + m - 1) r² q_{l-2}^m``  (the Legendre recursion,
  Abramowitz & Stegun 8.5.3, multiplied through by ``r^l / sin^m θ``), started from
  ``q_m^m = (2m - 1)!!`` and ``q_{m+1}^m = (2m + 1) z q_m^m``.

All normalisation constants are folded into the recursion coefficients: the recursion runs on
``b_l^m = sqrt((2l+1)/4π) (sqrt(2) if m > 0 else 1) sqrt((l-m)!/(l+m)!) q_l^m``, which is at
most of order ``sqrt(l)`` on the unit sphere, so nothing overflows at large ``l`` and every
output component costs one multiplication. Loops run over ``l`` and ``m``, never over points.

Two evaluation paths give the same values (to rounding):

* with autograd, one column per ``(l, m)``: a graph of about ``2 (l_max + 1)^2`` element-wise
  operations, differentiable to any order;
* without autograd, vectorised over ``m``: for each ``l`` the column
  ``B_l = (b_l^0, ..., b_l^l)`` (shape ``(l + 1, n)``) follows from ``B_{l-1}`` and
  ``B_{l-2}`` in four operations, and the block ``Y_l`` from ``B_l`` times the tables of
  ``c_m`` and ``s_m`` in two more; points are processed in blocks of 16384 (the temporaries
  stay in cache). About ``8 l_max`` operations instead of ``2 (l_max + 1)^2``.

``channels_first=True`` returns the components on the first axis, ``((l_max + 1)^2, ...)``,
the layout in which every component is a contiguous array. :func:`solid_harmonic_blocks`
yields the solid harmonics one ``l`` at a time in that layout, with the rows of each block in
"cosine first" order ``m = 0, 1, ..., l, -1, ..., -l`` (:func:`block_order`); the SOAP
density consumes them so.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import lru_cache

import torch

from entangle.errors import ConfigError, DataError, ShapeError

__all__ = ["real_spherical_harmonics", "solid_harmonics", "solid_harmonic_blocks", "block_order",
           "block_to_standard", "num_harmonics"]


def num_harmonics(l_max: int) -> int:
    """Number of real harmonics with ``l <= l_max``: ``(l_max + 1) ** 2``."""
    _check_l_max(l_max)
    return (l_max + 1) ** 2


def _check_l_max(l_max: int) -> None:
    if isinstance(l_max, bool) or not isinstance(l_max, int) or l_max < 0:
        raise ConfigError(f"l_max must be a non-negative int, got {l_max!r}")


@lru_cache(maxsize=None)
def _recursion_coefficients(l_max: int) -> tuple[dict, dict, dict]:
    """Scaled recursion coefficients for ``b_l^m = s_l^m a_l^m``.

    ``a_l^m = sqrt((l-m)!/(l+m)!) q_l^m`` (Schmidt semi-normalised, ``|a| <= 1`` on the unit
    sphere) and ``s_l^m = sqrt((2l+1)/4π) * (sqrt(2) if m > 0 else 1)``, so that
    ``Y_{l,0} = b_l^0`` and ``Y_{l,±m} = b_l^m (c_m | s_m)``.

    Returns
    -------
    start : dict ``m -> b_m^m`` (a constant)
    first : dict ``m -> k`` with ``b_{m+1}^m = k z b_m^m``
    step : dict ``(l, m) -> (k1, k2)`` with ``b_l^m = k1 z b_{l-1}^m - k2 r² b_{l-2}^m``
    """

    def scale(l: int, m: int) -> float:
        return math.sqrt((2 * l + 1) / (4 * math.pi)) * (math.sqrt(2.0) if m > 0 else 1.0)

    start, first, step = {}, {}, {}
    a_mm = 1.0  # a_m^m = prod_k sqrt((2k - 1) / 2k)
    for m in range(l_max + 1):
        if m > 0:
            a_mm *= math.sqrt((2 * m - 1) / (2 * m))
        start[m] = scale(m, m) * a_mm
        if m + 1 <= l_max:
            # a_{m+1}^m = sqrt(2m + 1) z a_m^m
            first[m] = math.sqrt(2 * m + 1) * scale(m + 1, m) / scale(m, m)
        for l in range(m + 2, l_max + 1):
            denom = math.sqrt((l - m) * (l + m))
            k1 = (2 * l - 1) / denom * scale(l, m) / scale(l - 1, m)
            k2 = math.sqrt((l + m - 1) * (l - m - 1)) / denom * scale(l, m) / scale(l - 2, m)
            step[(l, m)] = (k1, k2)
    return start, first, step


@lru_cache(maxsize=None)
def _column_coefficients(l_max: int, dtype: torch.dtype, device: torch.device
                         ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Column vectors of the recursion vectorised over ``m``, for ``l = 0 .. l_max``.

    Entry ``l`` (entry 0 unused) is ``(k1, k2)``: ``B_l[m] = k1[m] z B_{l-1}[m]`` for
    ``m <= l - 1`` (``k1``: (l, 1); at ``m = l - 1`` this is ``b_l^{l-1} = first z b_{l-1}^{l-1}``)
    plus ``k2[m] r² B_{l-2}[m]`` for ``m <= l - 2`` (``k2``: (l - 1, 1), None for ``l < 2``);
    ``B_l[l] = start[l]``.
    """
    start, first, step = _recursion_coefficients(l_max)
    out: list[tuple[torch.Tensor, torch.Tensor | None]] = [(torch.empty(0), None)]
    for l in range(1, l_max + 1):
        k1 = [step[(l, m)][0] for m in range(l - 1)] + [first[l - 1]]
        k2 = [-step[(l, m)][1] for m in range(l - 1)]
        out.append((torch.tensor(k1, dtype=dtype, device=device)[:, None],
                    torch.tensor(k2, dtype=dtype, device=device)[:, None] if l >= 2 else None))
    return out


def block_order(l: int) -> list[int]:
    """The ``m`` of the rows of a block of :func:`solid_harmonic_blocks`: ``0, 1..l, -1..-l``."""
    return [0, *range(1, l + 1), *range(-1, -l - 1, -1)]


@lru_cache(maxsize=None)
def _block_to_standard(l_max: int) -> tuple[int, ...]:
    index = []
    for l in range(l_max + 1):
        position = {m: l * l + r for r, m in enumerate(block_order(l))}
        index.extend(position[m] for m in range(-l, l + 1))
    return tuple(index)


def block_to_standard(l_max: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Indices that put the concatenated blocks of :func:`solid_harmonic_blocks` in order.

    Returns a ((l_max + 1)**2,) int64 tensor ``p``: component ``l*l + l + m`` (the standard
    order) is row ``p[l*l + l + m]`` of ``torch.cat(list(solid_harmonic_blocks(v, l_max)))``.
    """
    _check_l_max(l_max)
    return torch.tensor(_block_to_standard(l_max), dtype=torch.int64, device=device)


def _column_blocks(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, r2: torch.Tensor | None,
                   l_max: int, out: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """No-grad kernel: the blocks ``Y_l`` (2l + 1, n), ``l = 0, 1, ...``, rows in
    :func:`block_order`.

    x, y, z : (n,) coordinates (``r2 is None``: on the unit sphere, else ``r2 = x²+y²+z²``).
    out : optional ((l_max + 1)**2, n) output (rows may be strided, each one unit-stride);
        the blocks are then its views ``out[l²:(l+1)²]``, else fresh tensors.
    """
    start = _recursion_coefficients(l_max)[0]
    coefficients = _column_coefficients(l_max, x.dtype, x.device)
    n = x.shape[0]
    # row m of `cosines` / `sines`: r^m sin^m θ cos(mφ) / sin(mφ) (the real / imaginary part
    # of (x + iy)^m); row 0 is never read
    cosines, sines = x.new_empty(l_max + 1, n), x.new_empty(l_max + 1, n)
    if l_max >= 1:
        cosines[1], sines[1] = x, y
    for m in range(2, l_max + 1):
        torch.mul(x, cosines[m - 1], out=cosines[m]).addcmul_(y, sines[m - 1], value=-1.0)
        torch.mul(x, sines[m - 1], out=sines[m]).addcmul_(y, cosines[m - 1])
    block = x.new_empty(1, n) if out is None else out[:1]
    yield block.fill_(start[0])
    older, previous = None, x.new_full((1, n), start[0])  # B_{l-2}, B_{l-1}
    for l in range(1, l_max + 1):
        k1, k2 = coefficients[l]
        column = x.new_empty(l + 1, n)  # B_l: [l+1, n], rows m = 0 .. l
        column[l] = start[l]
        torch.mul(previous, k1, out=column[:l]).mul_(z)  # [l, n]
        if k2 is not None:
            column[:l - 1].addcmul_(older if r2 is None else r2 * older, k2)
        block = x.new_empty(2 * l + 1, n) if out is None else out[l * l:(l + 1) ** 2]
        block[0] = column[0]
        torch.mul(column[1:], cosines[1:l + 1], out=block[1:l + 1])  # m = 1 .. l
        torch.mul(column[1:], sines[1:l + 1], out=block[l + 1:])  # m = -1 .. -l
        yield block
        older, previous = previous, column


def solid_harmonic_blocks(vectors: torch.Tensor, l_max: int,
                          components_first: bool = False) -> Iterator[torch.Tensor]:
    """Solid harmonics ``|r|^l Y_lm`` of n vectors one ``l`` at a time, without autograd.

    Parameters
    ----------
    vectors : (n, 3) tensor, or (3, n) if ``components_first`` (then rows x, y, z are used
        as they are: no copies if they are unit-stride).
    l_max : largest ``l``.

    Yields, for ``l = 0 .. l_max``, a block ``(2l + 1, n)`` whose rows are the components
    ``m = 0, 1, ..., l, -1, ..., -l`` (:func:`block_order`). Consuming each block before the
    next one is computed keeps a chunked computation in cache (the SOAP density does this).
    Raises :class:`DataError` if ``vectors`` would need a gradient.
    """
    _check_l_max(l_max)
    if not isinstance(vectors, torch.Tensor) or not vectors.is_floating_point():
        raise DataError("vectors must be a floating-point torch.Tensor")
    if vectors.ndim != 2 or vectors.shape[0 if components_first else 1] != 3:
        expected = "(3, n)" if components_first else "(n, 3)"
        raise ShapeError(f"vectors must have shape {expected}, got {tuple(vectors.shape)}")
    if torch.is_grad_enabled() and vectors.requires_grad:
        raise DataError("solid_harmonic_blocks does not record gradients; use "
                        "solid_harmonics, or call it under torch.no_grad()")
    if components_first:
        x, y, z = vectors.contiguous()
        r2 = x * x + y * y + z * z
    else:
        x, y, z, r2 = _coordinates(vectors, normalize=False)
    return _column_blocks(x, y, z, r2, l_max)


def _recursion(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, r2: torch.Tensor | None,
               l_max: int) -> list[torch.Tensor]:
    """Recursion core: the ``(l_max+1)**2`` harmonic columns, each shaped like ``x``.

    ``r2 is None`` means the points lie on the unit sphere.
    """
    start, first, step = _recursion_coefficients(l_max)
    out: list[torch.Tensor | None] = [None] * (l_max + 1) ** 2
    cos_m, sin_m = x, y  # c_1, s_1; c_0 = 1 and s_0 = 0 are never multiplied out
    for m in range(l_max + 1):
        if m > 1:
            cos_m, sin_m = (torch.addcmul(x * cos_m, y, sin_m, value=-1.0),  # [...]
                            torch.addcmul(x * sin_m, y, cos_m))  # [...]
        b_prev2: torch.Tensor | None = None
        b_prev: torch.Tensor | None = None
        for l in range(m, l_max + 1):
            if l == m:
                b = None  # b_m^m is the constant start[m]
            elif l == m + 1:
                b = z * (first[m] * start[m])  # [...]
            else:
                k1, k2 = step[(l, m)]
                if b_prev2 is None:  # l == m + 2: b_{l-2}^m is the constant start[m]
                    low = z.new_tensor(-k2 * start[m]) if r2 is None else r2 * (-k2 * start[m])
                else:
                    low = b_prev2 * (-k2) if r2 is None else b_prev2 * r2 * (-k2)  # [...]
                b = torch.addcmul(low, z, b_prev, value=k1)  # [...]
            centre = l * l + l
            if m == 0:
                out[centre] = torch.full_like(z, start[0]) if b is None else b
            elif b is None:
                out[centre + m] = cos_m * start[m]  # [...]
                out[centre - m] = sin_m * start[m]  # [...]
            else:
                out[centre + m] = b * cos_m  # [...]
                out[centre - m] = b * sin_m  # [...]
            b_prev2, b_prev = b_prev, b
    return out  # (l_max+1)**2 x [...]


def _coordinates(vectors: torch.Tensor, normalize: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Unit-stride ``x, y, z`` of already validated ``vectors`` (..., 3), and ``r²``.

    With ``normalize`` the coordinates are those of the direction and ``r²`` is None.
    """
    x, y, z = vectors.unbind(dim=-1)
    if normalize:
        inv_r = torch.rsqrt(x * x + y * y + z * z)  # [...]
        return x * inv_r, y * inv_r, z * inv_r, None
    x, y, z = x.contiguous(), y.contiguous(), z.contiguous()  # every recursion step reads them
    return x, y, z, x * x + y * y + z * z


def _columns(vectors: torch.Tensor, l_max: int, normalize: bool) -> list[torch.Tensor]:
    """Harmonic columns of already validated ``vectors`` (..., 3) (the autograd path)."""
    x, y, z, r2 = _coordinates(vectors, normalize)
    return _recursion(x, y, z, r2 if l_max >= 2 else None, l_max)


_EVAL_ROWS = 16384  # points per block of the no-grad path: its temporaries stay in cache


class _StackLast(torch.autograd.Function):
    """``torch.stack(columns, dim=-1)`` whose backward hands back contiguous columns.

    The autograd of ``torch.stack`` returns strided views of the ``(..., k)`` cotangent, so
    every backward step of the recursion would read one number per cache line; one transposing
    copy instead makes all of them unit-stride (about 20 % faster forward + backward at 10^6
    points). The backward is made of differentiable operations, so higher derivatives work.
    """

    @staticmethod
    def forward(ctx, *columns: torch.Tensor) -> torch.Tensor:
        return torch.stack(columns, dim=-1)  # [..., k]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(grad.movedim(-1, 0).contiguous().unbind(0))  # k x [...]


def _validate(vectors: torch.Tensor, l_max: int) -> None:
    _check_l_max(l_max)
    if not isinstance(vectors, torch.Tensor):
        raise DataError(f"vectors must be a torch.Tensor, got {type(vectors).__name__}")
    if not vectors.is_floating_point():
        raise DataError(f"vectors must have a floating-point dtype, got {vectors.dtype}")
    if vectors.ndim < 1 or vectors.shape[-1] != 3:
        raise ShapeError(f"vectors must have shape (..., 3), got {tuple(vectors.shape)}")


def real_spherical_harmonics(vectors: torch.Tensor, l_max: int, normalize: bool = True,
                             channels_first: bool = False) -> torch.Tensor:
    """Real spherical harmonics of the directions of ``vectors``, all ``l <= l_max``.

    Parameters
    ----------
    vectors : (..., 3) tensor, any floating dtype and device (Cartesian x, y, z).
    l_max : largest angular momentum (any non-negative int; checked against scipy to 40).
    normalize : if True (default) evaluate ``Y_lm(r / |r|)``, the orthonormal harmonics of the
        direction; zero-length or non-finite vectors then raise :class:`DataError`.
        If False evaluate the solid harmonics ``|r|^l Y_lm(r / |r|)``, homogeneous polynomials
        of degree ``l`` in ``(x, y, z)`` that are defined (and smooth) everywhere.
    channels_first : if True return the components on the first axis (each one a contiguous
        array) instead of the last.

    Returns
    -------
    (..., (l_max + 1) ** 2) tensor (``((l_max + 1) ** 2, ...)`` if ``channels_first``), same
    dtype and device as ``vectors``; component ``l * l + l + m`` holds ``Y_{l,m}`` (convention
    in the module docstring). Differentiable with respect to ``vectors`` to any order.

    Examples
    --------
    >>> import math, torch
    >>> y = real_spherical_harmonics(torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64), 1)
    >>> torch.allclose(y, torch.tensor([[1.0, 0.0, math.sqrt(3.0), 0.0]], dtype=torch.float64)
    ...                / math.sqrt(4 * math.pi))
    True
    """
    _validate(vectors, l_max)
    if normalize:
        with torch.no_grad():
            r2 = (vectors * vectors).sum(dim=-1)  # [...]
            ok = (r2 > 0) & torch.isfinite(r2)  # [...]
        if not bool(ok.all()):
            bad = tuple(torch.nonzero(~ok)[0].tolist())
            raise DataError(f"vector at index {bad} has zero length or is not finite; "
                            "its direction is undefined", field="vectors")
    size = (l_max + 1) ** 2
    if torch.is_grad_enabled() and vectors.requires_grad:
        columns = _columns(vectors, l_max, normalize)
        if channels_first:
            return torch.stack(columns, dim=0)  # [(l_max+1)**2, ...]
        return _StackLast.apply(*columns)  # [..., (l_max+1)**2]
    # Without autograd, evaluate block by block straight into the output: the temporaries
    # stay in cache.
    flat = vectors.reshape(-1, 3)  # [n, 3]
    n = flat.shape[0]
    out = vectors.new_empty((size, n) if channels_first else (n, size))
    buffer = vectors.new_empty(size, min(n, _EVAL_ROWS))  # [(l_max+1)**2, block]
    standard = block_to_standard(l_max, vectors.device)  # block rows -> standard order
    for begin in range(0, n, _EVAL_ROWS):
        block = slice(begin, begin + _EVAL_ROWS)
        x, y, z, r2 = _coordinates(flat[block], normalize)
        target = buffer[:, :x.shape[0]]
        for _ in _column_blocks(x, y, z, r2, l_max, out=target):
            pass  # written into target
        if channels_first:
            torch.index_select(target, 0, standard, out=out[:, block])
        else:
            torch.index_select(target.T, 1, standard, out=out[block])
    if channels_first:
        return out.reshape(size, *vectors.shape[:-1])  # [(l_max+1)**2, ...]
    return out.reshape(*vectors.shape[:-1], size)  # [..., (l_max+1)**2]


def solid_harmonics(vectors: torch.Tensor, l_max: int) -> torch.Tensor:
    """Regular solid harmonics ``|r|^l Y_lm(r / |r|)``, shape ``(..., (l_max + 1) ** 2)``.

    Same as ``real_spherical_harmonics(vectors, l_max, normalize=False)``: polynomials of
    degree ``l`` in ``(x, y, z)``, smooth everywhere (also at ``r = 0``).
    """
    return real_spherical_harmonics(vectors, l_max, normalize=False)

"""SO(3)-invariant descriptors: power spectrum ``B2``, bispectrum ``B3`` and the SOAP module.

Sommer & Dunham, Sec. II:

* eq. (14), the power spectrum, here in the real basis of :mod:`entangle.so3`::

      B2[i, α1, α2, n1, n2, l] = c_l Σ_m A[i, α1, n1, lm] A[i, α2, n2, lm]

  where ``c_l`` is set by ``normalisation``:

  - ``"dscribe"`` (default): ``c_l = π sqrt(8 / (2l + 1))``, DScribe's convention, so that with
    the same GTO basis the unique entries equal DScribe's ``SOAP.create`` output
    (:func:`dscribe_indices` gives its layout);
  - ``"cg"``: ``c_l = (-1)^l / sqrt(2l + 1)``, eq. (14) literally: with complex coefficients
    ``A_{l,-m} = (-1)^m A*_{lm}``, ``Σ_m (-1)^(l-m) A_{lm} A_{l,-m} / sqrt(d_l)`` equals this;
  - ``"none"``: ``c_l = 1``.

  The tensor is returned in full (symmetric under ``(α1, n1) <-> (α2, n2)``), not only its
  unique entries.
* eq. (15), the bispectrum::

      B3[i, α1, α2, α3, n1, n2, n3, l1, l2, l3]
          = Σ_{m1 m2 m3} W^{l1 l2 l3}_{m1 m2 m3} A[i,α1,n1,l1m1] A[i,α2,n2,l2m2] A[i,α3,n3,l3m3]

  with ``W`` the real 3j symbol (:func:`entangle.so3.real_wigner_3j`, Hodapp & Shapeev eq. 10).
  For even ``l1 + l2 + l3`` this equals eq. (15) (whose CG prefactor
  ``(-1)^(l3-m3) / sqrt(d_l3) C^{l1 l2 l3}_{m1 m2 -m3}`` is ``(-1)^(l1-l2+l3)`` times the 3j
  symbol). Odd ``l1 + l2 + l3`` couplings are pseudo-scalars (they change sign under
  reflection), so only even ones are kept: those entries, and those violating the triangle
  rule, are zero. ``B3`` is then invariant under O(3).
* eq. (22): :func:`structure_average` averages per-atom invariants over each structure.

:class:`SOAP` puts density and invariants together for batches of structures; every output is
differentiable with respect to positions and cell (forces and stress by autograd).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from ase.data import atomic_numbers
from torch import nn

from entangle.data import AtomsBatch, Structure, neighbour_list
from entangle.descriptors.density import (
    PaddedNeighbours,
    delta_density,
    gaussian_density,
    pad_neighbours,
    safe_distances,
)
from entangle.descriptors.radial import (
    CUTOFF_FUNCTIONS,
    GTO_DECAY_THRESHOLD,
    ChebyshevBasis,
    GTOBasis,
    SphericalBesselBasis,
    cutoff_function,
)
from entangle.errors import ConfigError, DataError, ShapeError
from entangle.so3 import real_wigner_3j

__all__ = [
    "NORMALISATIONS",
    "species_numbers",
    "power_spectrum",
    "bispectrum",
    "structure_average",
    "dscribe_indices",
    "SOAPConfig",
    "SOAPOutput",
    "SOAP",
]

NORMALISATIONS = ("dscribe", "cg", "none")
"""Names of the power-spectrum prefactors ``c_l`` (see the module docstring)."""


def species_numbers(species: Sequence[int | str]) -> tuple[int, ...]:
    """Atomic numbers of a sequence of atomic numbers and/or chemical symbols.

    Strings of digits (``"29"``, as a command line gives them) count as atomic numbers.

    Raises
    ------
    ConfigError
        For an empty sequence, an unknown symbol, a number outside ``1..118`` or a duplicate.
    """
    if isinstance(species, (str, int)) or not len(species):
        raise ConfigError(f"species must be a non-empty sequence, got {species!r}")
    numbers = []
    for item in species:
        if isinstance(item, str) and item.strip().isdigit():
            item = int(item)
        if isinstance(item, str) and atomic_numbers.get(item.strip(), 0) > 0:
            numbers.append(atomic_numbers[item.strip()])
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool) \
                and 1 <= int(item) <= 118:
            numbers.append(int(item))
        else:
            raise ConfigError(f"unknown species {item!r} (expected a chemical symbol or an "
                              "atomic number in 1..118)")
    if len(set(numbers)) != len(numbers):
        raise ConfigError(f"species contains duplicates: {list(species)!r}")
    return tuple(numbers)


def _l_max_of(density: torch.Tensor) -> int:
    if density.dim() != 4:
        raise ShapeError(f"density must have shape (N, S, n, (l_max+1)^2), got "
                         f"{tuple(density.shape)}")
    l_max = math.isqrt(density.shape[-1]) - 1
    if (l_max + 1) ** 2 != density.shape[-1]:
        raise ShapeError(f"last axis of density must be (l_max+1)^2, got {density.shape[-1]}")
    return l_max


def _prefactors(l_max: int, normalisation: str) -> list[float]:
    if normalisation == "dscribe":
        return [math.pi * math.sqrt(8.0 / (2 * l + 1)) for l in range(l_max + 1)]
    if normalisation == "cg":
        return [(-1) ** l / math.sqrt(2 * l + 1) for l in range(l_max + 1)]
    if normalisation == "none":
        return [1.0] * (l_max + 1)
    raise ConfigError(f"unknown normalisation {normalisation!r}; choose one of {NORMALISATIONS}")


def power_spectrum(density: torch.Tensor, normalisation: str = "dscribe",
                   crossover: bool = True) -> torch.Tensor:
    """Power spectrum ``B2`` (Sommer & Dunham eq. 14) as a full tensor.

    Parameters
    ----------
    density : (N, S, n, (l_max + 1)**2) coefficients ``A``.
    normalisation : ``"dscribe"``, ``"cg"`` or ``"none"`` (module docstring).
    crossover : if True all species pairs; if False only ``α1 = α2`` (DScribe's
        ``compression={"mode": "crossover"}``).

    Returns
    -------
    B2 : (N, S, S, n, n, l_max + 1) if ``crossover`` else (N, S, n, n, l_max + 1).
    """
    l_max = _l_max_of(density)
    prefactors = _prefactors(l_max, normalisation)
    n_atoms, n_species, n_max, _ = density.shape
    sizes = [2 * l + 1 for l in range(l_max + 1)]
    if crossover:
        flat = density.reshape(n_atoms, n_species * n_max, -1)  # [N, S*n, (l_max+1)^2]
    else:
        flat = density.reshape(n_atoms * n_species, n_max, -1)  # [N*S, n, (l_max+1)^2]
    pieces = zip(torch.split(flat, sizes, dim=-1), prefactors)
    if torch.is_grad_enabled() and density.requires_grad:
        out = torch.stack([torch.bmm(x * c, x.transpose(1, 2))  # [rows, width, width] per l
                           for x, c in pieces], dim=-1)
    else:  # write each l straight into its place, c_l as the GEMM's alpha: no temporaries
        out = density.new_empty(l_max + 1, flat.shape[0], flat.shape[1], flat.shape[1])
        for l, (x, c) in enumerate(pieces):
            torch.baddbmm(out[l], x, x.transpose(1, 2), beta=0.0, alpha=c,
                          out=out[l])  # [rows, width, width]
        out = out.permute(1, 2, 3, 0)  # [rows, width, width, L]
    if crossover:
        out = out.reshape(n_atoms, n_species, n_max, n_species, n_max, l_max + 1)
        return out.permute(0, 1, 3, 2, 4, 5)  # [N, S, S, n, n, L]
    return out.reshape(n_atoms, n_species, n_max, n_max, l_max + 1)  # [N, S, n, n, L]


def bispectrum(density: torch.Tensor) -> torch.Tensor:
    """Bispectrum ``B3`` (Sommer & Dunham eq. 15) as a full tensor, even ``l1 + l2 + l3`` only.

    Parameters
    ----------
    density : (N, S, n, (l_max + 1)**2) coefficients ``A``.

    Returns
    -------
    B3 : (N, S, S, S, n, n, n, l_max + 1, l_max + 1, l_max + 1); entries with odd
        ``l1 + l2 + l3`` or outside the triangle rule are zero.
    """
    l_max = _l_max_of(density)
    n_atoms, n_species, n_max, _ = density.shape
    width = n_species * n_max
    flat = density.reshape(n_atoms, width, -1)  # [N, S*n, (l_max+1)^2]
    size = l_max + 1
    out = density.new_zeros(n_atoms, width, width, width, size * size * size)
    for l1 in range(size):
        x1 = flat[:, :, l1 * l1:(l1 + 1) ** 2]  # [N, S*n, 2l1+1]
        for l2 in range(size):
            x2 = flat[:, :, l2 * l2:(l2 + 1) ** 2]  # [N, S*n, 2l2+1]
            for l3 in range(abs(l1 - l2), min(l1 + l2, l_max) + 1):
                if (l1 + l2 + l3) % 2:
                    continue
                w = real_wigner_3j(l1, l2, l3, dtype=density.dtype, device=density.device)
                x3 = flat[:, :, l3 * l3:(l3 + 1) ** 2]  # [N, S*n, 2l3+1]
                coupled = torch.einsum("iap,ibq,pqr->iabr", x1, x2, w)  # [N, S*n, S*n, 2l3+1]
                out[..., (l1 * size + l2) * size + l3] = torch.einsum(
                    "iabr,icr->iabc", coupled, x3)  # [N, S*n, S*n, S*n]
    out = out.reshape(n_atoms, n_species, n_max, n_species, n_max, n_species, n_max,
                      size, size, size)
    return out.permute(0, 1, 3, 5, 2, 4, 6, 7, 8, 9)  # [N, S, S, S, n, n, n, L, L, L]


def structure_average(values: torch.Tensor, structure_index: torch.Tensor,
                      n_structures: int | None = None) -> torch.Tensor:
    """Per-structure mean of per-atom values (Sommer & Dunham eq. 22).

    Parameters
    ----------
    values : (N, ...) per-atom tensor (e.g. ``B2``).
    structure_index : (N,) int64 structure of each atom.
    n_structures : number of structures (default ``max(structure_index) + 1``).

    Returns
    -------
    (n_structures, ...) tensor; ``B̄ = (1 / N_b) Σ_{i in b} B_i``.
    """
    if structure_index.shape != values.shape[:1]:
        raise ShapeError(f"structure_index {tuple(structure_index.shape)} does not match "
                         f"values {tuple(values.shape)}")
    if n_structures is None:
        n_structures = int(structure_index.max()) + 1 if structure_index.numel() else 0
    sums = values.new_zeros((n_structures,) + values.shape[1:]).index_add_(
        0, structure_index, values)  # [B, ...]
    counts = torch.bincount(structure_index, minlength=n_structures).to(values.dtype)  # [B]
    if bool((counts == 0).any()):
        raise DataError("a structure has no atoms; its average is undefined",
                        field="structure_index")
    return sums / counts.reshape((-1,) + (1,) * (values.dim() - 1))


def dscribe_indices(species: Sequence[int | str], n_max: int, l_max: int,
                    crossover: bool = True) -> np.ndarray:
    """Flat indices that turn a full ``B2`` into DScribe's unique-entry feature vector.

    DScribe 2.x orders its species by atomic number and writes, for each species pair
    ``Z1 <= Z2``, for each ``l``, for each ``n1``, for each ``n2`` (``n2 >= n1`` if
    ``Z1 == Z2``), the entry ``p^{Z1 Z2}_{n1 n2 l}``. With
    ``flat = B2.reshape(N, -1)`` (layout ``[α1, α2, n1, n2, l]`` in the order of ``species``,
    or ``[α, n1, n2, l]`` when ``crossover`` is False), ``flat[:, dscribe_indices(...)]``
    equals ``SOAP(species=species, ...).create(...)`` of DScribe (with
    ``compression={"mode": "crossover"}`` when ``crossover`` is False).

    Returns
    -------
    (n_features,) int64 array.
    """
    numbers = species_numbers(species)
    order = np.argsort(numbers, kind="stable")  # DScribe position -> our species index
    n_species = len(numbers)
    size = l_max + 1
    out = []
    for a in range(n_species):
        for b in range(a, n_species):
            if not crossover and b != a:
                continue
            s1, s2 = int(order[a]), int(order[b])
            for l in range(size):
                for n1 in range(n_max):
                    for n2 in range(n1 if a == b else 0, n_max):
                        if crossover:
                            index = (((s1 * n_species + s2) * n_max + n1) * n_max + n2) * size + l
                        else:
                            index = ((s1 * n_max + n1) * n_max + n2) * size + l
                        out.append(index)
    return np.asarray(out, dtype=np.int64)


@dataclass(frozen=True)
class SOAPConfig:
    """Hyperparameters of :class:`SOAP` (rebuilds it completely).

    Attributes
    ----------
    species : tuple of int
        Atomic numbers (symbols are converted) in the order of the species axes of the output.
    r_cut : float
        Cutoff radius, Å.
    n_max, l_max : int
        Number of radial functions, largest angular momentum.
    sigma : float
        Width of the atomic Gaussians, Å (Gaussian density only).
    rbf : str
        ``"gto"`` (DScribe's GTOs), ``"chebyshev"`` (MTP basis on ``[r_min, r_cut]``) or
        ``"bessel"`` (spherical Bessel functions).
    density : str
        ``"gaussian"`` (SOAP; needs ``rbf="gto"``) or ``"delta"`` (ACE).
    cutoff : str or None
        Cutoff function weighting each neighbour (``"cosine"``, ``"polynomial"``, ``"mtp"``).
        None with a Gaussian density is DScribe's choice: no weighting, neighbours up to
        ``r_cut + sigma sqrt(2 ln 1000)`` (where the Gaussians have decayed to 1e-3).
        Otherwise neighbours up to ``r_cut``.
    r_min : float
        Inner radius of the Chebyshev basis, Å.
    include_center : bool or None
        Whether the central atom's own Gaussian is part of its density (DScribe: yes).
        None: True for a Gaussian density, False for a delta density (where it must be False).
    normalisation : str
        Power-spectrum prefactor: ``"dscribe"``, ``"cg"`` or ``"none"``.
    crossover : bool
        Keep cross-species power-spectrum entries (False: DScribe's "crossover" compression).
    bispectrum : bool
        Also compute ``B3``.
    """

    species: tuple[int, ...]
    r_cut: float
    n_max: int
    l_max: int
    sigma: float = 1.0
    rbf: str = "gto"
    density: str = "gaussian"
    cutoff: str | None = None
    r_min: float = 0.0
    include_center: bool | None = None
    normalisation: str = "dscribe"
    crossover: bool = True
    bispectrum: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "species", species_numbers(self.species))
        for name in ("r_cut", "sigma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
        for name, minimum in (("n_max", 1), ("l_max", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
        if self.rbf not in ("gto", "chebyshev", "bessel"):
            raise ConfigError(f"rbf must be 'gto', 'chebyshev' or 'bessel', got {self.rbf!r}")
        if self.density not in ("gaussian", "delta"):
            raise ConfigError(f"density must be 'gaussian' or 'delta', got {self.density!r}")
        if self.density == "gaussian" and self.rbf != "gto":
            raise ConfigError("a Gaussian density is expanded analytically only in the GTO "
                              f"basis; use rbf='gto' or density='delta' (got rbf={self.rbf!r})")
        if self.cutoff is not None and self.cutoff not in CUTOFF_FUNCTIONS:
            raise ConfigError(f"cutoff must be None or one of {sorted(CUTOFF_FUNCTIONS)}, "
                              f"got {self.cutoff!r}")
        if self.include_center is None:
            object.__setattr__(self, "include_center", self.density == "gaussian")
        if self.include_center and self.density == "delta":
            raise ConfigError("include_center=True needs a Gaussian density: a delta function "
                              "at the centre has no direction")
        if self.normalisation not in NORMALISATIONS:
            raise ConfigError(f"normalisation must be one of {NORMALISATIONS}, "
                              f"got {self.normalisation!r}")
        if self.rbf == "chebyshev" and not 0.0 <= self.r_min < self.r_cut:
            raise ConfigError(f"r_min must satisfy 0 <= r_min < r_cut, got {self.r_min!r}")

    @property
    def neighbour_radius(self) -> float:
        """Radius of the neighbour search, Å (``r_cut``, padded for DScribe's Gaussians)."""
        if self.density == "gaussian" and self.cutoff is None:
            return self.r_cut + self.sigma * math.sqrt(-2.0 * math.log(GTO_DECAY_THRESHOLD))
        return self.r_cut

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict; ``SOAPConfig(**d)`` rebuilds the config."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["species"] = list(self.species)
        return out


@dataclass(frozen=True, eq=False)
class SOAPOutput:
    """What :class:`SOAP` returns for a batch.

    Attributes
    ----------
    power_spectrum : (N, S, S, n, n, l_max + 1) tensor (``(N, S, n, n, l_max + 1)`` without
        crossover).
    structure_index : (N,) int64 structure of each atom.
    density : (N, S, n, (l_max + 1)**2) coefficients ``A``.
    bispectrum : (N, S, S, S, n, n, n, L, L, L) tensor or None.
    """

    power_spectrum: torch.Tensor
    structure_index: torch.Tensor
    density: torch.Tensor
    bispectrum: torch.Tensor | None = field(default=None)


class SOAP(nn.Module):
    """Smooth overlap of atomic positions: density coefficients, ``B2`` and ``B3`` per atom.

    With the defaults (GTO basis, Gaussian density, no cutoff function, central atom included,
    ``normalisation="dscribe"``) the power spectrum reproduces DScribe's
    ``dscribe.descriptors.SOAP(r_cut, n_max, l_max, sigma, rbf="gto")`` (to rounding; see
    :func:`dscribe_indices` for its unique-entry layout). Everything is differentiable with
    respect to ``batch.positions`` and ``batch.cell``: forces and stress follow by autograd.

    Parameters
    ----------
    config : SOAPConfig

    Examples
    --------
    >>> import numpy as np
    >>> from entangle.data import Structure
    >>> soap = SOAP(SOAPConfig(species=("Cu", "Au"), r_cut=4.0, n_max=3, l_max=2, sigma=0.5))
    >>> s = Structure(positions=np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.5]]),
    ...               numbers=np.array([29, 79]))
    >>> soap([s]).power_spectrum.shape
    torch.Size([2, 2, 2, 3, 3, 3])
    """

    def __init__(self, config: SOAPConfig):
        super().__init__()
        if not isinstance(config, SOAPConfig):
            raise ConfigError(f"config must be a SOAPConfig, got {type(config).__name__}")
        self.config = config
        if config.rbf == "gto":
            self.radial = GTOBasis(config.r_cut, config.n_max, config.l_max)
        elif config.rbf == "chebyshev":
            self.radial = ChebyshevBasis(config.r_min, config.r_cut, config.n_max, config.l_max)
        else:
            self.radial = SphericalBesselBasis(config.r_cut, config.n_max, config.l_max)
        lookup = torch.full((119,), -1, dtype=torch.int64)
        lookup[list(config.species)] = torch.arange(len(config.species))
        self.register_buffer("species_lookup", lookup, persistent=False)

    @property
    def n_species(self) -> int:
        """Number of species ``S``."""
        return len(self.config.species)

    def batch(self, systems: AtomsBatch | Structure | Sequence[Structure],
              dtype: torch.dtype = torch.float64) -> AtomsBatch:
        """An :class:`AtomsBatch` of ``systems`` (returned unchanged if it is one)."""
        if isinstance(systems, AtomsBatch):
            return systems
        if isinstance(systems, Structure):
            systems = [systems]
        return AtomsBatch.from_structures(list(systems), dtype=dtype,
                                          device=self.species_lookup.device)

    def species_index(self, batch: AtomsBatch) -> torch.Tensor:
        """(N,) species index of every atom; DataError for an element not in the config."""
        index = self.species_lookup[batch.numbers]  # [N]
        if bool((index < 0).any()):
            atom = int(torch.nonzero(index < 0)[0, 0])
            structure = int(batch.batch[atom])
            raise DataError(f"atomic number {int(batch.numbers[atom])} (atom "
                            f"{atom - int(batch.ptr[structure])}) is not among the SOAP species "
                            f"{list(self.config.species)}", index=structure, field="numbers")
        return index

    def neighbours(self, batch: AtomsBatch) -> PaddedNeighbours:
        """Neighbours within :attr:`SOAPConfig.neighbour_radius`, padded by centre and species.

        The centre slot is reserved when ``include_center``. Raises DataError for an element
        that is not among the configured species.
        """
        pairs = neighbour_list(batch, cutoff=self.config.neighbour_radius, sort=False)
        return pad_neighbours(pairs, batch.batch, self.species_index(batch), self.n_species,
                              include_center=bool(self.config.include_center))

    def density(self, batch: AtomsBatch,
                neighbours: PaddedNeighbours | None = None) -> torch.Tensor:
        """Density coefficients ``A``: (N, S, n_max, (l_max + 1)**2), dtype of the positions.

        ``neighbours`` (from :meth:`neighbours`) may be passed to reuse a list across calls,
        e.g. for finite differences; it must belong to the same batch.
        """
        config = self.config
        if neighbours is None:
            neighbours = self.neighbours(batch)
        vectors = neighbours.vectors(batch.positions, batch.cell)  # [N, S, K, 3]
        if config.cutoff is None:
            weights = neighbours.occupied  # [N, S, K] bool: weight 1 or 0
        else:
            distances = safe_distances(vectors, neighbours.real)  # [N, S, K]
            cutoff = cutoff_function(config.cutoff, distances, config.r_cut)  # [N, S, K]
            center_weight = float(cutoff_function(
                config.cutoff, torch.zeros((), dtype=torch.float64), config.r_cut))
            weights = neighbours.weights(cutoff, center_weight)  # [N, S, K]
        if config.density == "delta":
            return delta_density(vectors, weights.to(vectors.dtype), neighbours.real,
                                 self.radial, config.l_max, counts=neighbours.counts)
        return gaussian_density(vectors, weights, self.radial, config.sigma,
                                counts=neighbours.counts)

    def forward(self, systems: AtomsBatch | Structure | Sequence[Structure],
                neighbours: PaddedNeighbours | None = None) -> SOAPOutput:
        """Power spectrum (and bispectrum if configured) of every atom of ``systems``.

        Parameters
        ----------
        systems : AtomsBatch, Structure or sequence of Structure (converted in float64).
        neighbours : optional precomputed :meth:`neighbours` of the same batch.

        Returns
        -------
        SOAPOutput
        """
        batch = self.batch(systems)
        density = self.density(batch, neighbours)
        b2 = power_spectrum(density, self.config.normalisation, self.config.crossover)
        b3 = bispectrum(density) if self.config.bispectrum else None
        return SOAPOutput(power_spectrum=b2, structure_index=batch.batch, density=density,
                          bispectrum=b3)

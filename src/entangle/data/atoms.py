"""Validated atomic structures, datasets of them, and torch batches.

:class:`Structure` is the value type every loader returns and every model consumes. It is
checked once, when it is built, so that nothing downstream has to guard against NaNs,
overlapping atoms, singular cells or arrays of the wrong shape. :class:`Dataset` is an ordered,
immutable collection of structures; :class:`AtomsBatch` packs structures into torch tensors.

Conventions (as in ASE): positions and cell in Å, the cell holds lattice vectors as rows,
energy in eV, forces in eV/Å, stress in eV/Å³ as a Voigt 6-vector ``(xx, yy, zz, yz, xz, xy)``
with ``stress = (1/V) dE/dε`` (a compressed cell has negative stress; see
:mod:`entangle.data.units` for how other codes' conventions are mapped).

>>> import numpy as np
>>> from entangle.data import Structure
>>> s = Structure(positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]], numbers=[1, 1], energy=-31.7)
>>> s.n_atoms, s.symbols
(2, ['H', 'H'])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols
from scipy.spatial import cKDTree

from entangle.errors import ConfigError, DataError

__all__ = [
    "MIN_DISTANCE",
    "Structure",
    "Dataset",
    "AtomsBatch",
    "voigt_to_matrix",
    "matrix_to_voigt",
    "symbols_to_numbers",
    "closest_pair",
]

MIN_DISTANCE: float = 0.1
"""Smallest allowed distance in Å between two atoms (or an atom and a periodic image)."""

_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
_RESERVED_INFO = {"energy", "stress", "virial", "config_type", "weight"}


def voigt_to_matrix(voigt: np.ndarray) -> np.ndarray:
    """Symmetric ``(3, 3)`` matrix from a Voigt vector ``(xx, yy, zz, yz, xz, xy)``."""
    voigt = np.asarray(voigt, dtype=np.float64)
    matrix = np.empty((3, 3))
    for value, (a, b) in zip(voigt, _VOIGT):
        matrix[a, b] = matrix[b, a] = value
    return matrix


def matrix_to_voigt(matrix: np.ndarray) -> np.ndarray:
    """Voigt vector ``(xx, yy, zz, yz, xz, xy)`` of a ``(3, 3)`` matrix (upper triangle)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return np.array([matrix[a, b] for a, b in _VOIGT])


def symbols_to_numbers(symbols: Iterable[Any], *, source: str | None = None,
                       index: int | None = None) -> np.ndarray:
    """Atomic numbers of chemical symbols; unknown symbols raise :class:`DataError`."""
    numbers = []
    for k, symbol in enumerate(symbols):
        number = atomic_numbers.get(symbol) if isinstance(symbol, str) else None
        if number is None or number == 0:
            raise DataError(f"atom {k}: unknown chemical symbol {symbol!r}", source=source,
                            index=index, field="symbols")
        numbers.append(number)
    return np.array(numbers, dtype=np.int64)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def _finite_real(value: Any) -> bool:
    """A real number (not a bool) that is finite as a float64."""
    if not _is_real(value):
        return False
    try:
        return bool(np.isfinite(float(value)))
    except OverflowError:
        return False


_BRUTE_FORCE_PAIRS = 40_000
"""Up to this many point pairs, :func:`closest_pair` uses a dense distance matrix."""

_UNIT_SHIFTS = {k: (lambda grid: grid[grid.any(axis=1)])(
    np.stack(np.meshgrid(*[[-1, 0, 1]] * k, indexing="ij"), axis=-1).reshape(-1, k))
    for k in (1, 2, 3)}
"""Nonzero cell shifts with entries -1, 0, 1 for k periodic directions, ``(3**k - 1, k)``."""


def closest_pair(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray,
                 threshold: float) -> tuple[int, int, float] | None:
    """A pair of atoms (or an atom and a periodic image) closer than ``threshold``, if any.

    Assumes a cell whose periodic vectors are independent and whose perpendicular widths are
    at least ``threshold`` (as :class:`Structure` checks first): then no atom is that close to
    its own image, and after wrapping the atoms into the cell only images shifted by -1, 0 or
    +1 along each periodic vector can be that close. Only atoms within ``threshold`` of a face
    are replicated; a dense distance matrix (small systems) or a k-d tree then gives each
    atom's nearest other point.

    Parameters
    ----------
    positions : np.ndarray
        ``(n, 3)`` Å.
    cell : np.ndarray
        ``(3, 3)`` lattice vectors as rows, Å.
    pbc : np.ndarray
        ``(3,)`` bool.
    threshold : float
        Distance in Å.

    Returns
    -------
    (i, j, distance) or None
    """
    n = len(positions)
    points, owner = positions, np.arange(n)
    periodic = np.flatnonzero(pbc)
    if periodic.size:
        # Basis: the periodic lattice vectors, completed by unit vectors orthogonal to them.
        basis = cell.copy()
        if periodic.size < 3:
            _, _, vt = np.linalg.svd(cell[periodic])
            basis[np.flatnonzero(~pbc)] = vt[periodic.size:]
        inverse = np.linalg.inv(basis)
        coords = (positions @ inverse)[:, periodic]  # [n, k]
        floor = np.floor(coords)
        frac = coords - floor  # [n, k] in [0, 1]
        wrapped = positions - floor @ cell[periodic]  # [n, 3]
        reach = threshold * np.linalg.norm(inverse[:, periodic], axis=0)  # [k] cells/threshold
        # allowed[a, axis, step + 1]: may atom a's image shifted by step along axis come close?
        allowed = np.stack([frac > 1.0 - reach, np.ones_like(frac, dtype=bool), frac < reach],
                           axis=-1)  # [n, k, 3]
        boundary = np.flatnonzero(allowed[:, :, [0, 2]].any(axis=(1, 2)))  # [b]
        k = periodic.size
        shifts = _UNIT_SHIFTS[k]  # [m, k]
        take = allowed[boundary[:, None, None], np.arange(k)[None, None, :],
                       (shifts + 1)[None, :, :]].all(axis=-1)  # [b, m]
        atom, shift = np.nonzero(take)  # [n_images] pairs (boundary atom, shift)
        images = wrapped[boundary[atom]] + shifts[shift] @ cell[periodic]  # [n_images, 3]
        points = np.concatenate([wrapped, images])
        owner = np.concatenate([owner, boundary[atom]])
    if n * len(points) <= _BRUTE_FORCE_PAIRS:
        squared = ((points[:n, None, :] - points[None, :, :]) ** 2).sum(-1)  # [n, n_points]
        squared[np.arange(n), np.arange(n)] = np.inf  # not the atom itself
        other = squared.argmin(axis=1)  # [n]
        distance = np.sqrt(squared[np.arange(n), other])  # [n]
    else:
        distances, index = cKDTree(points).query(points[:n], k=2,
                                                 distance_upper_bound=threshold)
        # The nearest point is the atom itself, or a coincident atom and then itself.
        itself = index[:, 0] == np.arange(n)
        other = np.where(itself, index[:, 1], index[:, 0])
        distance = np.where(itself, distances[:, 1], distances[:, 0])
    close = np.flatnonzero(distance < threshold)
    if close.size == 0:
        return None
    i = int(close[0])
    return i, int(owner[other[i]]), float(distance[i])


@dataclass(frozen=True, eq=False, repr=False)
class Structure:
    """One atomic structure with optional labels, validated on construction.

    Attributes
    ----------
    positions : np.ndarray
        ``(n, 3)`` float64 Cartesian positions, Å.
    numbers : np.ndarray
        ``(n,)`` int64 atomic numbers in ``1..118``.
    cell : np.ndarray
        ``(3, 3)`` float64 lattice vectors as rows, Å (zeros for a molecule).
    pbc : np.ndarray
        ``(3,)`` bool periodicity along each lattice vector.
    energy : float or None
        Total (or, where the dataset says so, reference-shifted) energy, eV.
    forces : np.ndarray or None
        ``(n, 3)`` forces ``-dE/dx``, eV/Å.
    stress : np.ndarray or None
        ``(6,)`` Voigt stress ``(xx, yy, zz, yz, xz, xy)`` = ``(1/V) dE/dε``, eV/Å³; only for
        fully periodic structures.
    properties : dict[str, float]
        Further scalar labels (e.g. ``formation_energy_ev_natom``, ``bandgap_energy_ev``).
    weight : float
        Non-negative weight of the structure in a loss (default 1).
    config_type : str or None
        Group label (e.g. ``"AIMD-NVT"``, ``"Elastic"``).
    source, index : str or None, int or None
        Where the structure came from (file and position), used in error messages only.

    Raises
    ------
    DataError
        On construction, naming source, index and field, if an array has the wrong shape or
        is not finite, an atomic number is outside ``1..118``, the structure is empty, a
        periodic cell is singular or thinner than :data:`MIN_DISTANCE`, two atoms (or an atom
        and a periodic image) are closer than :data:`MIN_DISTANCE`, or a label is invalid.

    Notes
    -----
    Arrays are copied and made read-only; use :meth:`replace` to derive a modified structure
    (it is validated again).
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray | None = None
    pbc: np.ndarray | bool = False
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    properties: Mapping[str, float] = field(default_factory=dict)
    weight: float = 1.0
    config_type: str | None = None
    source: str | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        if self.source is not None and not isinstance(self.source, str):
            set_("source", str(self.source))
        if self.index is not None:
            if not isinstance(self.index, (int, np.integer)) or isinstance(self.index, bool):
                raise DataError(f"index must be an integer, got {self.index!r}",
                                source=self.source, field="index")
            set_("index", int(self.index))
        positions = self._array("positions", self.positions, np.float64)
        n = positions.shape[0] if positions.ndim == 2 else -1
        if positions.ndim != 2 or positions.shape[1] != 3:
            self._fail("positions", f"expected shape (n_atoms, 3), got {positions.shape}")
        if n == 0:
            self._fail("positions", "empty structure (no atoms)")
        self._finite("positions", positions)
        set_("positions", positions)

        numbers = self._array("numbers", self.numbers, None)
        if numbers.shape != (n,):
            self._fail("numbers", f"expected shape ({n},), got {numbers.shape}")
        if numbers.dtype.kind not in "iu":
            self._fail("numbers", f"atomic numbers must be integers, got dtype {numbers.dtype}")
        bad = np.flatnonzero((numbers < 1) | (numbers > 118))
        if bad.size:
            self._fail("numbers", f"atom {bad[0]}: atomic number {numbers[bad[0]]} outside 1..118")
        set_("numbers", numbers.astype(np.int64))

        cell = np.zeros((3, 3)) if self.cell is None else self._array("cell", self.cell,
                                                                        np.float64)
        if cell.shape != (3, 3):
            self._fail("cell", f"expected shape (3, 3), got {cell.shape}")
        self._finite("cell", cell)
        set_("cell", cell)
        pbc = np.array(self.pbc)
        if pbc.shape == ():
            pbc = np.repeat(pbc, 3)
        if pbc.shape != (3,) or pbc.dtype != np.bool_:
            self._fail("pbc", f"expected 3 booleans, got {self.pbc!r}")
        set_("pbc", pbc.copy())
        self._check_cell()

        if self.energy is not None:
            if not _finite_real(self.energy):
                self._fail("energy", f"expected a finite number, got {self.energy!r}")
            set_("energy", float(self.energy))
        if self.forces is not None:
            forces = self._array("forces", self.forces, np.float64)
            if forces.shape != (n, 3):
                self._fail("forces", f"expected shape ({n}, 3), got {forces.shape}")
            self._finite("forces", forces)
            set_("forces", forces)
        if self.stress is not None:
            stress = self._array("stress", self.stress, np.float64)
            if stress.shape != (6,):
                self._fail("stress", f"expected a Voigt 6-vector, got shape {stress.shape}")
            self._finite("stress", stress)
            if not pbc.all():
                self._fail("stress", "a stress needs a fully periodic cell")
            set_("stress", stress)

        if not isinstance(self.properties, Mapping):
            self._fail("properties", f"expected a mapping, got {type(self.properties).__name__}")
        properties = {}
        for key, value in self.properties.items():
            if not isinstance(key, str):
                self._fail("properties", f"property names must be strings, got {key!r}")
            if not _finite_real(value):
                self._fail(f"properties[{key!r}]", f"expected a finite number, got {value!r}")
            properties[key] = float(value)
        set_("properties", properties)
        if not _finite_real(self.weight) or self.weight < 0:
            self._fail("weight", f"expected a finite number >= 0, got {self.weight!r}")
        set_("weight", float(self.weight))
        if self.config_type is not None and not isinstance(self.config_type, str):
            self._fail("config_type", f"expected a string, got {self.config_type!r}")
        self._check_distances()
        for name in ("positions", "numbers", "cell", "pbc", "forces", "stress"):
            value = getattr(self, name)
            if value is not None:
                value.flags.writeable = False

    # -- validation helpers -------------------------------------------------------------------
    def _fail(self, field_name: str, message: str) -> None:
        raise DataError(message, source=self.source, index=self.index, field=field_name)

    def _array(self, field_name: str, value: Any, dtype: type | None) -> np.ndarray:
        """A copy of ``value`` as a numeric array; strings, objects and booleans are refused."""
        try:
            array = np.array(value, copy=True)
        except (TypeError, ValueError) as error:
            raise DataError(f"not a numeric array ({error})", source=self.source,
                            index=self.index, field=field_name) from None
        if array.dtype.kind not in "iuf":
            self._fail(field_name, f"not a numeric array (dtype {array.dtype})")
        return array if dtype is None else array.astype(dtype)

    def _finite(self, field_name: str, array: np.ndarray) -> None:
        if not np.isfinite(array).all():
            where = tuple(int(k) for k in np.argwhere(~np.isfinite(array))[0])
            self._fail(field_name, f"non-finite value {array[where]} at {where}")

    def _check_cell(self) -> None:
        periodic = self.cell[self.pbc]  # [k, 3]
        if not len(periodic):
            return
        u, sigma, vt = np.linalg.svd(periodic, full_matrices=False)  # [k, k], [k], [k, 3]
        if sigma[-1] <= 1e-10 * max(sigma[0], 1e-300):
            self._fail("cell", f"singular or ill-conditioned cell {self.cell.tolist()} "
                               f"with pbc {self.pbc.tolist()}")
        # Dual vectors d_k (P d = 1): the perpendicular width along vector k is 1 / |d_k|.
        dual = vt.T @ (u.T / sigma[:, None])  # [3, k]
        widths = 1.0 / np.linalg.norm(dual, axis=0)  # [k]
        if widths.min() < MIN_DISTANCE:
            k = int(np.argmin(widths))
            self._fail("cell", f"periodic cell is only {widths[k]:.3g} Å thick across lattice "
                               f"vector {np.flatnonzero(self.pbc)[k]} (< {MIN_DISTANCE} Å)")

    def _check_distances(self) -> None:
        pair = closest_pair(self.positions, self.cell, self.pbc, MIN_DISTANCE)
        if pair is not None:
            i, j, distance = pair
            self._fail("positions", f"atoms {i} and {j} are {distance:.3g} Å apart "
                                    f"(< {MIN_DISTANCE} Å, periodic images included)")

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for symbol in self.symbols:
            counts[symbol] = counts.get(symbol, 0) + 1
        formula = "".join(f"{k}{v if v > 1 else ''}" for k, v in counts.items())
        labels = [name for name in ("energy", "forces", "stress")
                  if getattr(self, name) is not None]
        where = f", {self.source}#{self.index}" if self.source is not None else ""
        return (f"Structure({formula}, pbc={''.join('TF'[not p] for p in self.pbc)}, "
                f"labels={labels}, config_type={self.config_type!r}{where})")

    # -- derived quantities -------------------------------------------------------------------
    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return int(self.positions.shape[0])

    @property
    def symbols(self) -> list[str]:
        """Chemical symbols of the atoms."""
        return [chemical_symbols[z] for z in self.numbers]

    @property
    def volume(self) -> float:
        """Cell volume in Å³ (``|det cell|``; 0 for a molecule without cell)."""
        return float(abs(np.linalg.det(self.cell)))

    def replace(self, **changes: Any) -> Structure:
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)

    # -- ASE interoperability -------------------------------------------------------------------
    @classmethod
    def from_ase(cls, atoms: Any, *, energy_key: str = "energy", forces_key: str = "forces",
                 stress_key: str = "stress", source: str | None = None,
                 index: int | None = None) -> Structure:
        """Build a structure from an :class:`ase.Atoms`.

        Labels are looked up first in the results of an attached calculator (as ASE's extxyz
        reader stores ``energy``/``forces``/``stress`` there), then in ``atoms.info`` /
        ``atoms.arrays`` under the given keys. A stress may be a Voigt 6-vector or a ``(3, 3)``
        matrix in eV/Å³ (ASE sign). If there is no stress but ``info["virial"]`` (eV, the
        libAtoms/GAP convention ``virial = -V σ``), the stress is ``-virial / V``.
        ``info["config_type"]`` and ``info["weight"]`` set those fields; all other finite real
        scalars in ``info`` become :attr:`properties`; non-scalar info entries are not carried.
        """
        results = dict(getattr(atoms.calc, "results", {}) or {}) if atoms.calc else {}

        def lookup(key: str, store: Mapping[str, Any]) -> Any:
            if key in results:
                return results[key]
            return store.get(key)

        def fail(message: str, field_name: str) -> DataError:
            return DataError(message, source=source, index=index, field=field_name)

        energy = lookup(energy_key, atoms.info)
        if isinstance(energy, np.ndarray) and energy.shape in ((), (1,)):
            energy = energy.reshape(()).item()
        forces = lookup(forces_key, atoms.arrays)
        stress = lookup(stress_key, atoms.info)
        if stress is not None:
            stress = np.asarray(stress)
            if stress.shape == (3, 3):
                if not np.allclose(stress, stress.T, rtol=1e-6, atol=1e-10):
                    raise fail("stress matrix is not symmetric", "stress")
                stress = matrix_to_voigt(stress)
            elif stress.shape == (9,):
                raise fail("stress given as a flat 9-vector; expected (3, 3) or Voigt (6,)",
                           "stress")
        elif "virial" in atoms.info:
            virial = np.asarray(atoms.info["virial"])
            if virial.shape != (3, 3) or virial.dtype.kind not in "iuf":
                raise fail(f"expected a (3, 3) numeric virial, got {virial.shape}", "virial")
            volume = abs(np.linalg.det(np.asarray(atoms.cell)))
            if volume == 0 or not np.allclose(virial, virial.T, rtol=1e-6, atol=1e-10):
                raise fail("virial needs a non-singular cell and a symmetric matrix", "virial")
            stress = -matrix_to_voigt(virial) / volume
        properties = {key: value for key, value in atoms.info.items()
                      if key not in _RESERVED_INFO and key not in (energy_key, stress_key)
                      and _is_real(value)}
        return cls(positions=atoms.get_positions(), numbers=atoms.get_atomic_numbers(),
                   cell=np.asarray(atoms.cell), pbc=np.asarray(atoms.pbc, dtype=bool),
                   energy=energy, forces=forces, stress=stress, properties=properties,
                   weight=atoms.info.get("weight", 1.0),
                   config_type=atoms.info.get("config_type"), source=source, index=index)

    def to_ase(self) -> Any:
        """An :class:`ase.Atoms` with a SinglePointCalculator carrying energy, forces, stress.

        ``config_type``, ``weight`` (when not 1) and :attr:`properties` go into ``info``.
        """
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell,
                      pbc=self.pbc)
        atoms.info.update(self.properties)
        if self.config_type is not None:
            atoms.info["config_type"] = self.config_type
        if self.weight != 1.0:
            atoms.info["weight"] = self.weight
        results = {name: np.array(value) if isinstance(value, np.ndarray) else value
                   for name in ("energy", "forces", "stress")
                   if (value := getattr(self, name)) is not None}
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms


class Dataset(Sequence[Structure]):
    """An ordered, immutable collection of :class:`Structure`.

    Parameters
    ----------
    structures : iterable of Structure
    name : str, optional
        A label (e.g. the file or short name it was loaded from).

    Examples
    --------
    >>> train, valid = dataset.split([0.9, 0.1], seed=0)   # doctest: +SKIP
    >>> elastic = dataset.filter(config_type="Elastic")    # doctest: +SKIP
    """

    def __init__(self, structures: Iterable[Structure] = (), name: str | None = None):
        self._structures: tuple[Structure, ...] = tuple(structures)
        for k, s in enumerate(self._structures):
            if not isinstance(s, Structure):
                raise DataError(f"expected a Structure, got {type(s).__name__}", source=name,
                                index=k)
        self.name = name

    # -- sequence protocol -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._structures)

    def __iter__(self) -> Iterator[Structure]:
        return iter(self._structures)

    @overload
    def __getitem__(self, key: int) -> Structure: ...

    @overload
    def __getitem__(self, key: slice | Sequence[int] | np.ndarray) -> Dataset: ...

    def __getitem__(self, key: Any) -> Structure | Dataset:
        """An int gives a Structure; a slice, index array or boolean mask gives a Dataset."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            return self._structures[key]
        if isinstance(key, slice):
            return Dataset(self._structures[key], name=self.name)
        index = np.asarray(key)
        if index.dtype == np.bool_:
            if index.shape != (len(self),):
                raise ConfigError(f"boolean mask of shape {index.shape} for {len(self)} structures")
            index = np.flatnonzero(index)
        if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
            raise ConfigError(f"cannot index a Dataset with {key!r}")
        n = len(self)
        if index.size and (index.min() < -n or index.max() >= n):
            raise ConfigError(f"index out of range for a Dataset of {n} structures")
        return Dataset((self._structures[int(k)] for k in index), name=self.name)

    def __add__(self, other: Dataset) -> Dataset:
        if not isinstance(other, Dataset):
            return NotImplemented
        return Dataset(self._structures + other._structures,
                       name=" + ".join(n for n in (self.name, other.name) if n) or None)

    def __repr__(self) -> str:
        species = " ".join(chemical_symbols[z] for z in self.species)
        return f"Dataset({self.name!r}, {len(self)} structures, species {species})"

    @classmethod
    def concatenate(cls, datasets: Iterable[Dataset], name: str | None = None) -> Dataset:
        """One dataset holding the structures of all given datasets, in order."""
        return cls((s for d in datasets for s in d), name=name)

    # -- views ------------------------------------------------------------------------------
    @property
    def species(self) -> np.ndarray:
        """Sorted unique atomic numbers ``(n_species,)``."""
        if not self._structures:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate([s.numbers for s in self._structures]))

    def n_atoms(self) -> np.ndarray:
        """Number of atoms of each structure, ``(n_structures,)`` int64."""
        return np.array([s.n_atoms for s in self._structures], dtype=np.int64)

    def energies(self) -> np.ndarray:
        """Energies ``(n_structures,)`` in eV; raises DataError if one is missing."""
        return np.array([self._label(k, "energy") for k in range(len(self))], dtype=np.float64)

    def stresses(self) -> np.ndarray:
        """Voigt stresses ``(n_structures, 6)`` in eV/Å³; raises DataError if one is missing."""
        return np.array([self._label(k, "stress") for k in range(len(self))],
                        dtype=np.float64).reshape(-1, 6)

    def forces(self) -> np.ndarray:
        """Forces of all atoms, concatenated, ``(sum n_atoms, 3)`` in eV/Å."""
        parts = [self._label(k, "forces") for k in range(len(self))]
        return np.concatenate(parts) if parts else np.zeros((0, 3))

    def property(self, name: str) -> np.ndarray:
        """Scalar property ``name`` of each structure, ``(n_structures,)``."""
        values = []
        for k, s in enumerate(self._structures):
            if name not in s.properties:
                raise DataError(f"no property {name!r}", source=s.source, index=s.index,
                                field="properties")
            values.append(s.properties[name])
        return np.array(values, dtype=np.float64)

    def _label(self, k: int, name: str) -> Any:
        value = getattr(self._structures[k], name)
        if value is None:
            s = self._structures[k]
            raise DataError(f"structure has no {name}", source=s.source or self.name,
                            index=k if s.index is None else s.index, field=name)
        return value

    # -- selection --------------------------------------------------------------------------
    def filter(self, config_type: str | Iterable[str] | None = None,
               predicate: Callable[[Structure], bool] | None = None) -> Dataset:
        """Structures whose ``config_type`` is (one of) the given, and/or ``predicate`` holds."""
        wanted = {config_type} if isinstance(config_type, str) else (
            None if config_type is None else set(config_type))
        return Dataset((s for s in self._structures
                        if (wanted is None or s.config_type in wanted)
                        and (predicate is None or predicate(s))), name=self.name)

    def split(self, sizes: Sequence[float] | Sequence[int], seed: int) -> tuple[Dataset, ...]:
        """Random disjoint subsets.

        Parameters
        ----------
        sizes : sequence of int or of float
            Integers: the number of structures of each part (sum <= len). Floats: fractions
            (each >= 0, sum <= 1); part ``k`` ends at ``floor(cumsum(fractions)[k] * len)``
            (up to 1e-9 of rounding), so fractions summing to 1 use every structure once.
        seed : int
            Seed of the permutation (numpy ``default_rng``).

        Returns
        -------
        tuple of Dataset
            One dataset per entry of ``sizes``.
        """
        n = len(self)
        values = list(sizes)
        if not values:
            raise ConfigError("split needs at least one size")
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            counts = np.array(values, dtype=np.int64)
            if (counts < 0).any() or counts.sum() > n:
                raise ConfigError(f"split sizes {values} do not fit {n} structures")
            ends = np.cumsum(counts)
        else:
            fractions = np.array(values, dtype=np.float64)
            if not np.isfinite(fractions).all() or (fractions < 0).any() \
                    or fractions.sum() > 1 + 1e-9:
                raise ConfigError(f"split fractions {values} must be >= 0 and sum to <= 1")
            ends = np.minimum(np.floor(np.cumsum(fractions) * n + 1e-9).astype(np.int64), n)
        order = np.random.default_rng(seed).permutation(n)
        starts = np.concatenate([[0], ends[:-1]])
        return tuple(self[order[a:b]] for a, b in zip(starts, ends))

    # -- ASE interoperability -------------------------------------------------------------------
    def to_ase(self) -> list[Any]:
        """List of :class:`ase.Atoms` (see :meth:`Structure.to_ase`)."""
        return [s.to_ase() for s in self._structures]

    @classmethod
    def from_ase(cls, images: Iterable[Any], *, name: str | None = None,
                 **keys: str) -> Dataset:
        """Dataset from :class:`ase.Atoms` objects (``keys`` go to :meth:`Structure.from_ase`)."""
        return cls((Structure.from_ase(atoms, source=name, index=k, **keys)
                    for k, atoms in enumerate(images)), name=name)


@dataclass(frozen=True, eq=False)
class AtomsBatch:
    """Structures packed into flat torch tensors (atoms of all structures concatenated).

    Attributes
    ----------
    positions : torch.Tensor
        ``(N, 3)`` Å.
    numbers : torch.Tensor
        ``(N,)`` int64 atomic numbers.
    cell : torch.Tensor
        ``(B, 3, 3)`` lattice vectors as rows, Å.
    pbc : torch.Tensor
        ``(B, 3)`` bool.
    batch : torch.Tensor
        ``(N,)`` int64 structure index of each atom.
    ptr : torch.Tensor
        ``(B + 1,)`` int64; atoms of structure ``b`` are ``ptr[b]:ptr[b+1]``.
    energy, energy_mask : torch.Tensor
        ``(B,)`` eV (0 where missing) and bool (True where present).
    forces : torch.Tensor
        ``(N, 3)`` eV/Å (0 where missing); ``forces_mask`` ``(B,)`` bool.
    stress : torch.Tensor
        ``(B, 6)`` Voigt eV/Å³ (0 where missing); ``stress_mask`` ``(B,)`` bool.
    weight : torch.Tensor
        ``(B,)`` structure weights.
    """

    positions: torch.Tensor
    numbers: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    batch: torch.Tensor
    ptr: torch.Tensor
    energy: torch.Tensor
    energy_mask: torch.Tensor
    forces: torch.Tensor
    forces_mask: torch.Tensor
    stress: torch.Tensor
    stress_mask: torch.Tensor
    weight: torch.Tensor

    @classmethod
    def from_structures(cls, structures: Sequence[Structure], *,
                        dtype: torch.dtype = torch.float64,
                        device: torch.device | str | None = None) -> AtomsBatch:
        """Pack structures (e.g. a :class:`Dataset` or a slice of it) into one batch."""
        structures = list(structures)
        if not structures:
            raise DataError("cannot batch zero structures", field="structures")
        for k, s in enumerate(structures):
            if not isinstance(s, Structure):
                raise DataError(f"expected a Structure, got {type(s).__name__}", index=k)
        if not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating-point torch dtype, got {dtype}")
        counts = np.array([s.n_atoms for s in structures], dtype=np.int64)
        ptr = np.concatenate([[0], np.cumsum(counts)])

        def floats(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(array, dtype=dtype, device=device)

        def ints(array: np.ndarray, kind: torch.dtype = torch.int64) -> torch.Tensor:
            return torch.as_tensor(array, dtype=kind, device=device)

        zeros3 = np.zeros((0, 3))
        return cls(
            positions=floats(np.concatenate([s.positions for s in structures])),
            numbers=ints(np.concatenate([s.numbers for s in structures])),
            cell=floats(np.stack([s.cell for s in structures])),
            pbc=ints(np.stack([s.pbc for s in structures]), torch.bool),
            batch=ints(np.repeat(np.arange(len(structures)), counts)),
            ptr=ints(ptr),
            energy=floats(np.array([s.energy or 0.0 for s in structures])),
            energy_mask=ints(np.array([s.energy is not None for s in structures]), torch.bool),
            forces=floats(np.concatenate([zeros3] + [
                s.forces if s.forces is not None else np.zeros((s.n_atoms, 3))
                for s in structures])),
            forces_mask=ints(np.array([s.forces is not None for s in structures]), torch.bool),
            stress=floats(np.stack([s.stress if s.stress is not None else np.zeros(6)
                                    for s in structures])),
            stress_mask=ints(np.array([s.stress is not None for s in structures]), torch.bool),
            weight=floats(np.array([s.weight for s in structures])),
        )

    @property
    def n_structures(self) -> int:
        """Number of structures ``B``."""
        return int(self.cell.shape[0])

    @property
    def n_atoms(self) -> torch.Tensor:
        """Atoms per structure, ``(B,)`` int64."""
        return self.ptr[1:] - self.ptr[:-1]

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> AtomsBatch:
        """A copy on another device and/or with another floating dtype."""
        changes = {}
        for f in dataclasses.fields(self):
            tensor = getattr(self, f.name)
            changes[f.name] = tensor.to(device=device,
                                        dtype=dtype if tensor.is_floating_point() else None)
        return dataclasses.replace(self, **changes)

"""Loaders for the public benchmark datasets, all returning validated, unit-normalised data.

Every loader returns a :class:`~entangle.data.Dataset` of :class:`~entangle.data.Structure`
in eV, Å, eV/Å and eV/Å³ (ASE stress sign, Voigt ``xx yy zz yz xz xy``), except the H2CO
normal-mode data, which are not atoms and come back as :class:`VibrationalData`. Any problem
with a file (missing, truncated, malformed JSON/xyz, wrong types, missing keys, NaN/inf,
overlapping atoms, singular cells, ...) raises :class:`~entangle.errors.DataError` naming the
file, the structure index and the field. Nothing is dropped or repaired.

``load(name_or_path, **options)`` is the single entry point. A path to a file or directory is
loaded by its format; otherwise the name is looked up relative to the data root
``$ENTANGLE_DATA`` (default: ``shared/data`` beside the repository) or is one of the short
names below (``El`` is an element, ``split`` is ``train`` or ``test``):

=============================  ==================================================================
``mlearn:El:split``            Zuo et al., J. Phys. Chem. A 124, 731 (2020); El in Li Mo Si Ge Cu
                               Ni. Energy, forces, stress; config_type = group (AIMD-NVT, Elastic,
                               Surface, Vacancy). Cu/Ni *train* are not in the mlearn snapshot:
                               they are the ACEData xyz joined with the JARVIS stresses
                               (:func:`attach_jarvis_stress`), without group labels.
``zuo2020:El:split``           the same structures from ACEData's extxyz: energy, forces only.
``monbtaw``                    Li et al., npj Comput. Mater. (2020), MoNbTaW SNAP data (maml): all
                               29 files (5,658 structures); config_type = file stem.
``monbtaw:<stem>``             one file, e.g. ``monbtaw:Mo_AIMD``.
``fitsnap:Ta``                 Thompson et al., J. Comput. Phys. 285, 316 (2015): 363 configs;
                               config_type = group directory (Volume_BCC, ...).
``fitsnap:InP``                Cusentino et al., J. Phys. Chem. A 124, 5456 (2020): 1894 configs.
``nomad2018:split``            Sutton et al., npj Comput. Mater. 5, 111 (2019): 2400 train / 600
                               test; no energy; properties from the CSV columns.
``qm7``                        Blum & Reymond, JACS 131, 8732 (2009); Rupp et al., PRL 108, 058301
                               (2012): 7101 molecules; energy = PBE0 atomization energy (eV);
                               property ``energy_dftb3`` (eV).
``rmd17_aspirin:split``        Christensen & von Lilienfeld (2020) revised MD17 aspirin, mace-jax
                               split (1200 train / 1800 test).
``3bpa:<stem>``,               3BPA: Kovács et al., JCTC 17, 7696 (2021); acac, ethanol: Batatia
``acac:<stem>``,               et al., arXiv:2205.06643 (BOTNet). One xyz file each, e.g.
``ethanol:<stem>``             ``acac:train_300K``, ``ethanol:test_MD``, ``3bpa:train_mixedT``.
``h2co:split``                 Hino & Kurashige H2CO normal-mode PES (Pompon), split ``train`` or
                               ``validation`` -> :class:`VibrationalData`.
=============================  ==================================================================

Stress conventions of the sources (checked on the data, see :mod:`entangle.data.units`):
mlearn ``virial_stress`` and maml ``stress`` are VASP values in kbar, FitSNAP ``Stress`` is in
bar (Ta) or kB (InP); all use the pressure sign (positive = compressive) and are multiplied by
``-unit``. The component order of the 6-vectors is *not* uniform: integrating ``V σ : dε``
along the ``Elastic`` strain series reproduces the DFT energy differences to 1-3 % only with
``xx yy zz xy yz zx`` (VASP's order) for mlearn Si/Ge and maml MoNbTaW, and only with
``xx yy zz xy zx yz`` for mlearn Mo/Cu/Ni (:data:`MLEARN_STRESS_ORDER`). mlearn Li's shear
stresses are too small and noisy to tell; its shear cells match the VASP order by which
component is non-zero. The JARVIS 3x3 stresses were assembled from the mlearn 6-vectors as if
these were in ASE order; the joiner undoes that before applying the element's order.

Known caveat, not corrected: the mlearn Cu and Ni diagonal stresses carry an isotropic offset
of about -24 and -28 kbar (ASE sign) with respect to the energies (a least-squares fit over the
relaxed strained cells; typical of an incomplete-basis Pulay stress). Volume-conserving strain
pairs, and all other elements, fit without it.
"""

from __future__ import annotations

import csv
import inspect
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from entangle.data.atoms import Dataset, Structure, symbols_to_numbers
from entangle.data.units import BAR, KBAR, KCAL_PER_MOL
from entangle.errors import ConfigError, DataError

__all__ = [
    "DATA_ENV",
    "VASP_ORDER",
    "MLEARN_STRESS_ORDER",
    "VibrationalData",
    "data_root",
    "load",
    "read_extxyz",
    "read_mlearn_json",
    "read_maml_json",
    "read_fitsnap_json",
    "read_aims_geometry",
    "read_vibrational_npz",
    "load_mlearn",
    "load_zuo2020",
    "load_monbtaw",
    "load_fitsnap",
    "load_nomad2018",
    "load_qm7",
    "load_h2co",
    "attach_jarvis_stress",
]

DATA_ENV = "ENTANGLE_DATA"
"""Environment variable naming the directory that holds the shared datasets."""

VASP_ORDER = ("xx", "yy", "zz", "xy", "yz", "zx")
"""Component order of VASP's stress 6-vectors (OUTCAR ``in kB`` line)."""

MLEARN_STRESS_ORDER: dict[str, tuple[str, ...]] = {
    "Li": VASP_ORDER, "Si": VASP_ORDER, "Ge": VASP_ORDER,
    "Mo": ("xx", "yy", "zz", "xy", "zx", "yz"),
    "Cu": ("xx", "yy", "zz", "xy", "zx", "yz"),
    "Ni": ("xx", "yy", "zz", "xy", "zx", "yz"),
}
"""Order of mlearn's ``virial_stress`` components per element, found from the Elastic data."""

_COMPONENT = {"xx": (0, 0), "yy": (1, 1), "zz": (2, 2), "yz": (1, 2), "zy": (1, 2),
              "xz": (0, 2), "zx": (0, 2), "xy": (0, 1), "yx": (0, 1)}
_ASE_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
_FITSNAP_STRESS_UNITS = {"bar": BAR, "kbar": KBAR, "kb": KBAR}
_FITSNAP_STYLES = {"EnergyStyle": "electronvolt", "ForcesStyle": "electronvoltperangstrom",
                   "LatticeStyle": "angstrom", "PositionsStyle": "angstrom",
                   "AtomTypeStyle": "chemicalsymbol"}
_ELEMENTS = ("Li", "Mo", "Si", "Ge", "Cu", "Ni")
_SPLITS = ("train", "test")
_BOTNET_DIRS = {"3bpa": "dataset_3BPA", "acac": "dataset_acac", "ethanol": "dataset_ethanol"}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
class _Where:
    """Location (file, structure index) of the record being parsed, for error messages."""

    def __init__(self, source: str, index: int | None = None):
        self.source, self.index = source, index

    def error(self, field: str | None, message: str) -> DataError:
        return DataError(message, source=self.source, index=self.index, field=field)

    def get(self, mapping: Any, key: str, kinds: type | tuple[type, ...],
            field: str | None = None) -> Any:
        """``mapping[key]``, which must exist and be an instance of ``kinds``."""
        if not isinstance(mapping, dict):
            raise self.error(field or key, f"expected a JSON object holding {key!r}, "
                                           f"got {type(mapping).__name__}")
        if key not in mapping:
            raise self.error(field or key, f"missing key {key!r}")
        value = mapping[key]
        if not isinstance(value, kinds) or isinstance(value, bool) and bool not in (
                kinds if isinstance(kinds, tuple) else (kinds,)):
            raise self.error(field or key, f"expected {_kind_name(kinds)}, "
                                           f"got {type(value).__name__}")
        return value

    def floats(self, value: Any, shape: tuple[int, ...], field: str) -> np.ndarray:
        """A float64 array of the given shape (-1: any size) from nested JSON lists."""
        try:
            array = np.array(value)
        except (ValueError, TypeError) as error:
            raise self.error(field, f"not a numeric array ({error})") from None
        if array.dtype.kind not in "iuf":
            raise self.error(field, f"not a numeric array (found {array.dtype} values)")
        if len(shape) != array.ndim or any(s not in (-1, a) for s, a in zip(shape, array.shape)):
            want = "(" + ", ".join("n" if s == -1 else str(s) for s in shape) + ")"
            raise self.error(field, f"expected shape {want}, got {array.shape}")
        return array.astype(np.float64)

    def number(self, value: Any, field: str) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.error(field, f"expected a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:
            raise self.error(field, f"number out of range: {str(value)[:40]}...") from None


def _kind_name(kinds: type | tuple[type, ...]) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    names = {dict: "a JSON object", list: "a JSON array", str: "a string", int: "a number",
             float: "a number"}
    return " or ".join(sorted({names.get(k, k.__name__) for k in kinds}))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("file not found", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read file ({error})", source=str(path)) from None


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise DataError(f"malformed JSON ({error})", source=source) from None


def _stress_from_components(raw: np.ndarray, order: Sequence[str]) -> np.ndarray:
    """ASE Voigt vector of a 6-vector whose components are named by ``order``."""
    matrix = np.zeros((3, 3))
    for value, name in zip(raw, order):
        a, b = _COMPONENT[name]
        matrix[a, b] = matrix[b, a] = value
    return np.array([matrix[a, b] for a, b in _ASE_VOIGT])


def _check_order(order: Sequence[str]) -> tuple[str, ...]:
    order = tuple(order)
    if len(order) != 6 or any(not isinstance(c, str) or c not in _COMPONENT for c in order) or \
            len({_COMPONENT[c] for c in order}) != 6:
        raise ConfigError(f"stress order must name the 6 components once each, got {order}")
    return order


def _symmetric_voigt(matrix: np.ndarray, where: _Where, field: str) -> np.ndarray:
    """Voigt vector ``(xx yy zz yz xz xy)`` of a matrix that must be symmetric."""
    if not np.allclose(matrix, matrix.T, rtol=1e-8, atol=1e-8 * max(1.0, np.abs(matrix).max())):
        raise where.error(field, f"stress matrix is not symmetric: {matrix.tolist()}")
    return np.array([matrix[a, b] for a, b in _ASE_VOIGT])


def _structure(where: _Where, **fields: Any) -> Structure:
    return Structure(source=where.source, index=where.index, **fields)


def _dataset(structures: list[Structure], source: str) -> Dataset:
    """A Dataset of a file's structures; a file without any is malformed."""
    if not structures:
        raise DataError("no structures in file", source=source)
    return Dataset(structures, name=source)


# ---------------------------------------------------------------------------------------------
# data root and the single entry point
# ---------------------------------------------------------------------------------------------
def data_root() -> Path:
    """Directory of the shared datasets: ``$ENTANGLE_DATA`` or ``shared/data`` beside the repo."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def load(name: str | os.PathLike, **options: Any) -> Dataset | VibrationalData:
    """Load a dataset by path or short name (see the module docstring for the names).

    Parameters
    ----------
    name : str or path
        A file or directory (absolute, relative to the working directory or to
        :func:`data_root`), or a short name such as ``"mlearn:Mo:train"``.
    **options
        Passed to the loader chosen (e.g. ``forces_key`` for :func:`read_extxyz`, ``split``
        for a NOMAD or H2CO directory).

    Returns
    -------
    Dataset, or VibrationalData for the H2CO arrays.

    Raises
    ------
    ConfigError
        Unknown name or option.
    DataError
        Missing or malformed file, invalid structure.
    """
    text = os.fspath(name)
    candidates = [Path(text)]
    if not Path(text).is_absolute():
        candidates.append(data_root() / text)
    for path in candidates:
        if path.exists():
            return _load_path(path, options)
    head, _, rest = text.partition(":")
    if head in _SHORT_NAMES:
        return _SHORT_NAMES[head](rest, options)
    raise ConfigError(f"unknown dataset {text!r}: not a file or directory (also tried "
                      f"{data_root() / text}) and not a short name ({', '.join(_SHORT_NAMES)})")


def _call(loader: Callable[..., Any], *args: Any, **options: Any) -> Any:
    try:
        inspect.signature(loader).bind(*args, **options)
    except TypeError as error:
        raise ConfigError(f"{loader.__name__}: {error}") from None
    return loader(*args, **options)


def _parts(rest: str, n: int, usage: str) -> list[str]:
    parts = rest.split(":") if rest else []
    if len(parts) != n:
        raise ConfigError(f"expected a name like {usage!r}")
    return parts


def _short_mlearn(rest: str, options: dict[str, Any]) -> Dataset:
    element, split = _parts(rest, 2, "mlearn:Mo:train")
    return _call(load_mlearn, element, split, **options)


def _short_zuo(rest: str, options: dict[str, Any]) -> Dataset:
    element, split = _parts(rest, 2, "zuo2020:Mo:train")
    return _call(load_zuo2020, element, split, **options)


def _short_monbtaw(rest: str, options: dict[str, Any]) -> Dataset:
    groups = None if not rest else [rest]
    return _call(load_monbtaw, groups=groups, **options)


def _short_fitsnap(rest: str, options: dict[str, Any]) -> Dataset:
    (system,) = _parts(rest, 1, "fitsnap:Ta")
    dirs = {"Ta": "Ta_Linear_JCP2014", "InP": "InP_JPCA2020"}
    if system not in dirs:
        raise ConfigError(f"unknown FitSNAP system {system!r}; one of {list(dirs)}")
    return _call(load_fitsnap, data_root() / "fitsnap_Ta_InP" / dirs[system], **options)


def _short_nomad(rest: str, options: dict[str, Any]) -> Dataset:
    (split,) = _parts(rest, 1, "nomad2018:train")
    return _call(load_nomad2018, data_root() / "nomad2018_tco", split, **options)


def _short_qm7(rest: str, options: dict[str, Any]) -> Dataset:
    _parts(rest, 0, "qm7")
    return _call(load_qm7, data_root() / "qm7_qml" / "qm7_7101.extxyz", **options)


def _short_rmd17(rest: str, options: dict[str, Any]) -> Dataset:
    (split,) = _parts(rest, 1, "rmd17_aspirin:train")
    if split not in _SPLITS:
        raise ConfigError(f"split must be one of {_SPLITS}, got {split!r}")
    path = data_root() / "rmd17_aspirin_macejax" / f"rmd17_aspirin_{split}.xyz"
    return _call(read_extxyz, path, **options)


def _short_botnet(system: str) -> Callable[[str, dict[str, Any]], Dataset]:
    def loader(rest: str, options: dict[str, Any]) -> Dataset:
        (stem,) = _parts(rest, 1, f"{system}:<file stem>")
        folder = data_root() / "botnet_3bpa_acac_ethanol" / _BOTNET_DIRS[system]
        path = folder / f"{stem}.xyz"
        if not path.is_file():
            stems = sorted(p.stem for p in folder.glob("*.xyz"))
            raise ConfigError(f"no file {path}; available: {stems}")
        return _call(read_extxyz, path, **options)
    return loader


def _short_h2co(rest: str, options: dict[str, Any]) -> VibrationalData:
    (split,) = _parts(rest, 1, "h2co:train")
    return _call(load_h2co, data_root() / "h2co_pompon", split, **options)


_SHORT_NAMES: dict[str, Callable[[str, dict[str, Any]], Any]] = {
    "mlearn": _short_mlearn, "zuo2020": _short_zuo, "monbtaw": _short_monbtaw,
    "fitsnap": _short_fitsnap, "nomad2018": _short_nomad, "qm7": _short_qm7,
    "rmd17_aspirin": _short_rmd17, "3bpa": _short_botnet("3bpa"),
    "acac": _short_botnet("acac"), "ethanol": _short_botnet("ethanol"), "h2co": _short_h2co,
}


def _load_path(path: Path, options: dict[str, Any]) -> Dataset | VibrationalData:
    """Load a file or directory by its format."""
    if path.is_dir():
        if (path / "JSON").is_dir() or path.name == "JSON":
            return _call(load_fitsnap, path, **options)
        if (path / "train.csv").is_file():
            return _call(load_nomad2018, path, **options)
        if (path / "x_train.npy").is_file():
            return _call(load_h2co, path, **options)
        files = sorted(path.glob("*.json"))
        if files:
            return Dataset.concatenate((_call(_read_json_file, f, **options) for f in files),
                                       name=str(path))
        raise ConfigError(f"{path}: no loader for this directory")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _call(read_vibrational_npz, path, **options)
    if suffix == ".csv":
        return _call(load_nomad2018, path.parent, path.stem, **options)
    if suffix == ".json":
        return _call(_read_json_file, path, **options)
    if suffix in (".xyz", ".extxyz"):
        if _looks_like_aims(path):
            return Dataset([_call(read_aims_geometry, path, **options)], name=str(path))
        return _call(read_extxyz, path, **options)
    raise ConfigError(f"{path}: unknown file type {suffix!r} (expected .xyz, .extxyz, .json, "
                      ".csv or .npz; use load_h2co for .npy arrays)")


def _looks_like_aims(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(4096).decode("utf-8", errors="replace")
    except OSError as error:
        raise DataError(f"cannot read file ({error})", source=str(path)) from None
    for line in head.splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            return words[0] in ("lattice_vector", "atom", "atom_frac")
    return False


def _read_json_file(path: Path, *, config_type: str | None = None,
                    stress_order: Sequence[str] | None = None) -> Dataset:
    """Sniff a JSON file's flavour (FitSNAP, mlearn, maml) and read it."""
    source = str(path)
    text = _read_text(path)
    if text.lstrip().startswith("#"):
        return read_fitsnap_json(path, config_type=config_type, _text=text)
    data = _parse_json(text, source)
    if isinstance(data, dict) and "Dataset" in data:
        return read_fitsnap_json(path, config_type=config_type, _text=text)
    if isinstance(data, dict) and set(data) <= {"train", "test"}:
        raise ConfigError(f"{path}: a JARVIS label file holds no structures; use "
                          "attach_jarvis_stress or load('mlearn:Cu:train')")
    if isinstance(data, list) and data and isinstance(data[0], dict) and isinstance(
            data[0].get("outputs"), dict) and "virial_stress" in data[0]["outputs"]:
        return _pymatgen_records(data, source, stress_key="virial_stress",
                                 order=stress_order, element_orders=MLEARN_STRESS_ORDER,
                                 config_type=config_type, group_key="group")
    return _pymatgen_records(data, source, stress_key="stress",
                             order=VASP_ORDER if stress_order is None else stress_order,
                             element_orders=None,
                             config_type=config_type or path.stem, group_key=None)


# ---------------------------------------------------------------------------------------------
# extxyz
# ---------------------------------------------------------------------------------------------
_PROPERTIES = re.compile(r"""Properties\s*=\s*["']?([^\s"']*)""")


def _check_xyz_layout(text: str, source: str) -> None:
    """Check the frame layout of an (ext)xyz file before ASE parses it.

    ASE trusts the atom count of each header and the column counts in ``Properties=`` and
    loops over them, so a corrupted count (say 10**20) would make it run for ever. Every
    frame must be ``n`` (>= 1), a comment line and ``n`` atom lines (optionally followed by
    ``VEC`` lines); a ``Properties`` column count may not exceed the columns of the first atom
    line.
    """
    lines = text.splitlines()
    k, frame = 0, 0
    while k < len(lines):
        if not lines[k].strip():
            if any(line.strip() for line in lines[k:]):
                raise DataError(f"line {k + 1}: blank line between frames", source=source,
                                index=frame)
            break
        try:
            n_atoms = int(lines[k])
        except ValueError:
            raise DataError(f"line {k + 1}: expected the number of atoms, got "
                            f"{lines[k][:40]!r}", source=source, index=frame) from None
        if n_atoms < 1 or k + 1 + n_atoms >= len(lines):
            raise DataError(f"line {k + 1}: header announces {n_atoms} atoms but "
                            f"{max(len(lines) - k - 2, 0)} lines follow", source=source,
                            index=frame)
        match = _PROPERTIES.search(lines[k + 1])
        if match:
            columns = len(lines[k + 2].split())
            counts = match.group(1).split(":")[2::3]
            if not all(c.isdigit() and 1 <= int(c) <= columns for c in counts):
                raise DataError(f"line {k + 2}: Properties {match.group(1)!r} do not fit the "
                                f"{columns} columns of the atom lines", source=source,
                                index=frame)
        k += 2 + n_atoms
        while k < len(lines) and lines[k].lstrip().startswith("VEC"):
            k += 1
        frame += 1


def _ase_frames(path: Path) -> list[Any]:
    """All frames of an extxyz file read with ASE; any parser failure becomes a DataError."""
    import io

    import ase.io

    text = _read_text(path)
    _check_xyz_layout(text, str(path))
    try:
        return ase.io.read(io.StringIO(text), index=":", format="extxyz")
    except Exception as error:  # ASE raises many types for malformed input; all mean "bad file"
        raise DataError(f"malformed extxyz ({type(error).__name__}: {error})",
                        source=str(path)) from None


def read_extxyz(path: str | os.PathLike, *, energy_key: str = "energy",
                forces_key: str | None = None, stress_key: str = "stress",
                config_type: str | None = None) -> Dataset:
    """Read an extended-xyz file (through :func:`ase.io.read`).

    Parameters
    ----------
    path : path
    energy_key, stress_key : str
        Info keys (or calculator results) of energy (eV) and stress (eV/Å³, ASE sign, Voigt or
        3x3). Without a stress, an ``info["virial"]`` in eV becomes ``-virial / V``.
    forces_key : str, optional
        Per-atom array of the forces (eV/Å). By default ``forces``, or ``force`` (the ACEData
        spelling) when a frame has no ``forces``.
    config_type : str, optional
        Overrides ``info["config_type"]`` for every structure.

    Returns
    -------
    Dataset
        Numeric scalar ``info`` entries become properties (in the file's units).
    """
    path = Path(path)
    structures = []
    for k, atoms in enumerate(_ase_frames(path)):
        key = forces_key
        if key is None:
            has = set(atoms.arrays) | set(getattr(atoms.calc, "results", {}) or {})
            key = "forces" if "forces" in has or "force" not in has else "force"
        structure = Structure.from_ase(atoms, energy_key=energy_key, forces_key=key,
                                       stress_key=stress_key, source=str(path), index=k)
        if config_type is not None:
            structure = structure.replace(config_type=config_type)
        structures.append(structure)
    return _dataset(structures, str(path))


def load_qm7(path: str | os.PathLike | None = None) -> Dataset:
    """QM7 (7101 molecules) from the derived extxyz ``qm7_qml/qm7_7101.extxyz``.

    Each frame's header holds ``name``, ``energy_pbe0_kcal_mol`` (PBE0 atomization energy)
    and ``energy_dftb3_kcal_mol``. Returns energy = PBE0 atomization energy in eV and the
    property ``energy_dftb3`` in eV (1 kcal/mol = :data:`~entangle.data.units.KCAL_PER_MOL` eV).
    """
    path = Path(path) if path is not None else data_root() / "qm7_qml" / "qm7_7101.extxyz"
    structures = []
    for k, atoms in enumerate(_ase_frames(path)):
        where = _Where(str(path), k)
        energy = where.number(atoms.info.get("energy_pbe0_kcal_mol"), "energy_pbe0_kcal_mol")
        dftb3 = where.number(atoms.info.get("energy_dftb3_kcal_mol"), "energy_dftb3_kcal_mol")
        structures.append(_structure(where, positions=atoms.positions,
                                     numbers=atoms.numbers, cell=np.asarray(atoms.cell),
                                     pbc=np.asarray(atoms.pbc, dtype=bool),
                                     energy=energy * KCAL_PER_MOL,
                                     properties={"energy_dftb3": dftb3 * KCAL_PER_MOL}))
    return _dataset(structures, str(path))


# ---------------------------------------------------------------------------------------------
# pymatgen-style JSON (mlearn, maml)
# ---------------------------------------------------------------------------------------------
def _pymatgen_structure(where: _Where, record: dict[str, Any]) -> dict[str, Any]:
    """positions, numbers, cell, pbc of a pymatgen ``Structure.as_dict()``, without pymatgen."""
    structure = where.get(record, "structure", dict)
    lattice = where.get(structure, "lattice", dict, "structure.lattice")
    cell = where.floats(where.get(lattice, "matrix", list, "structure.lattice.matrix"), (3, 3),
                        "structure.lattice.matrix")
    pbc = lattice.get("pbc", [True, True, True])
    if not (isinstance(pbc, list) and len(pbc) == 3 and all(isinstance(p, bool) for p in pbc)):
        raise where.error("structure.lattice.pbc", f"expected 3 booleans, got {pbc!r}")
    sites = where.get(structure, "sites", list, "structure.sites")
    symbols, xyz, abc = [], [], []
    for k, site in enumerate(sites):
        species = site.get("species") if isinstance(site, dict) else None
        specie = species[0] if isinstance(species, list) and len(species) == 1 else None
        if not isinstance(specie, dict) or specie.get("occu") != 1 or isinstance(
                specie.get("occu"), bool) or not isinstance(specie.get("element"), str):
            raise _site_error(where, k, site)
        symbols.append(specie["element"])
        if "xyz" in site:
            xyz.append(site["xyz"])
        else:
            abc.append(where.get(site, "abc", list, f"structure.sites[{k}].abc"))
    if xyz and abc:
        raise where.error("structure.sites", "sites mix Cartesian 'xyz' and fractional 'abc'")
    positions = (where.floats(xyz, (-1, 3), "structure.sites.xyz") if xyz or not abc
                 else where.floats(abc, (-1, 3), "structure.sites.abc") @ cell)
    return {"positions": positions,
            "numbers": symbols_to_numbers(symbols, source=where.source, index=where.index),
            "cell": cell, "pbc": np.array(pbc)}


def _site_error(where: _Where, k: int, site: Any) -> DataError:
    """The DataError describing what is wrong with the species of a pymatgen site."""
    field = f"structure.sites[{k}]"
    species = where.get(site, "species", list, field + ".species")
    if len(species) != 1:
        return where.error(field, f"expected one species per site, got {len(species)} "
                                  "(disordered sites are not supported)")
    where.get(species[0], "element", str, field + ".element")
    occupancy = where.number(species[0].get("occu"), field + ".occu")
    return where.error(field, f"partial occupancy {occupancy} is not supported")


def _pymatgen_records(data: Any, source: str, *, stress_key: str,
                      order: Sequence[str] | None,
                      element_orders: Mapping[str, Sequence[str]] | None,
                      config_type: str | None, group_key: str | None) -> Dataset:
    """Structures of a list of ``{structure, outputs: {energy, forces, <stress_key>}}``."""
    if not isinstance(data, list):
        raise DataError(f"expected a JSON array of records, got {type(data).__name__}",
                        source=source)
    if order is not None:
        order = _check_order(order)
    structures = []
    for k, record in enumerate(data):
        where = _Where(source, k)
        fields = _pymatgen_structure(where, record)
        n = len(fields["numbers"])
        if "num_atoms" in record and record["num_atoms"] != n:
            raise where.error("num_atoms", f"num_atoms = {record['num_atoms']!r} but the "
                                           f"structure has {n} sites")
        outputs = where.get(record, "outputs", dict)
        energy = where.number(where.get(outputs, "energy", (int, float), "outputs.energy"),
                              "outputs.energy")
        forces = where.floats(where.get(outputs, "forces", list, "outputs.forces"), (n, 3),
                              "outputs.forces")
        raw = where.floats(where.get(outputs, stress_key, list, f"outputs.{stress_key}"), (6,),
                           f"outputs.{stress_key}")
        components = order
        if components is None:
            element = where.get(record, "element", str)
            if element not in element_orders:
                raise where.error("element", f"no known stress component order for {element!r}"
                                             "; pass stress_order=")
            components = element_orders[element]
        stress = -KBAR * _stress_from_components(raw, components)
        label = config_type
        if label is None and group_key is not None:
            label = where.get(record, group_key, str)
        structures.append(_structure(where, energy=energy, forces=forces, stress=stress,
                                     config_type=label, **fields))
    return _dataset(structures, source)


def read_mlearn_json(path: str | os.PathLike, *,
                     stress_order: Sequence[str] | None = None) -> Dataset:
    """mlearn ``data/<El>/{training,test}.json`` (Zuo et al. 2020), parsed without pymatgen.

    Energy (eV), forces (eV/Å) and ``virial_stress`` (VASP kbar, pressure sign) become energy,
    forces and ASE stress ``-KBAR * σ``; config_type is the record's ``group``.

    Parameters
    ----------
    stress_order : sequence of 6 component names, optional
        Order of ``virial_stress``; default :data:`MLEARN_STRESS_ORDER` of the record's element.
    """
    path = Path(path)
    data = _parse_json(_read_text(path), str(path))
    return _pymatgen_records(data, str(path), stress_key="virial_stress", order=stress_order,
                             element_orders=MLEARN_STRESS_ORDER, config_type=None,
                             group_key="group")


def read_maml_json(path: str | os.PathLike, *, config_type: str | None = None) -> Dataset:
    """maml MoNbTaW training JSON (Li et al. 2020): energy, forces, ``stress`` (VASP kbar).

    The stress 6-vector is in VASP order ``xx yy zz xy yz zx`` and pressure sign; config_type
    defaults to the file stem (e.g. ``Mo_AIMD``).
    """
    path = Path(path)
    data = _parse_json(_read_text(path), str(path))
    return _pymatgen_records(data, str(path), stress_key="stress", order=VASP_ORDER,
                             element_orders=None, config_type=config_type or path.stem,
                             group_key=None)


def load_mlearn(element: str, split: str, root: str | os.PathLike | None = None) -> Dataset:
    """mlearn split with energy, forces and stress (see the module docstring for Cu/Ni train)."""
    if element not in _ELEMENTS or split not in _SPLITS:
        raise ConfigError(f"mlearn has elements {_ELEMENTS} and splits {_SPLITS}, "
                          f"got {element!r}, {split!r}")
    root = Path(root) if root is not None else data_root()
    path = root / "mlearn" / element / ("training.json" if split == "train" else "test.json")
    if path.is_file() or element not in ("Cu", "Ni"):
        return read_mlearn_json(path)
    folder = root / "mlearn" / element
    return attach_jarvis_stress(load_zuo2020(element, split, root),
                                folder / f"jarvis_leaderboard_mlearn_{element}_stresses.json",
                                folder / f"jarvis_leaderboard_mlearn_{element}_energy.json",
                                split=split, element=element)


def load_zuo2020(element: str, split: str, root: str | os.PathLike | None = None) -> Dataset:
    """ACEData extxyz of the Zuo et al. (2020) benchmark: energy and forces (key ``force``)."""
    if element not in _ELEMENTS or split not in _SPLITS:
        raise ConfigError(f"zuo2020 has elements {_ELEMENTS} and splits {_SPLITS}, "
                          f"got {element!r}, {split!r}")
    root = Path(root) if root is not None else data_root()
    return read_extxyz(root / "zuo2020_xyz_acedata" / f"{element}_{split}.xyz",
                       forces_key="force")


def attach_jarvis_stress(dataset: Dataset, stress_file: str | os.PathLike,
                         energy_file: str | os.PathLike, *, split: str,
                         element: str) -> Dataset:
    """Join the JARVIS-Leaderboard mlearn stresses to the ACEData structures, by id order.

    The JARVIS files map ids ``El-1 .. El-N`` (numbered through train, then test) to the total
    energy (eV) and to a 3x3 stress in kbar written as ``"a;b;...;i"``. Ids are taken in
    numerical order and matched one-to-one with ``dataset``; every energy must agree with the
    structure's energy to 1e-6 eV, which guards the join. The 3x3 matrices were assembled from
    mlearn's 6-vectors ``v`` as ``[[v0, v5, v4], [v5, v1, v3], [v4, v3, v2]]``; ``v`` is
    recovered and read with :data:`MLEARN_STRESS_ORDER` of ``element``, then converted to the
    ASE sign and eV/Å³ (``-KBAR``).

    Returns
    -------
    Dataset
        The same structures with ``stress`` set.
    """
    if element not in MLEARN_STRESS_ORDER:
        raise ConfigError(f"no known stress order for {element!r}")
    stress_file, energy_file = Path(stress_file), Path(energy_file)
    tables = []
    for path in (stress_file, energy_file):
        data = _parse_json(_read_text(path), str(path))
        table = _Where(str(path)).get(data, split, dict)
        pattern = re.compile(rf"{re.escape(element)}-(\d+)")
        ids = []
        for key in table:
            match = pattern.fullmatch(key)
            if match is None:
                raise DataError(f"unexpected id {key!r}", source=str(path), field=split)
            ids.append((int(match.group(1)), key))
        tables.append([table[key] for _, key in sorted(ids)])
    stresses, energies = tables
    if not len(stresses) == len(energies) == len(dataset):
        raise DataError(f"{len(stresses)} stresses and {len(energies)} energies for "
                        f"{len(dataset)} structures", source=str(stress_file), field=split)
    structures = []
    for k, (structure, text, energy) in enumerate(zip(dataset, stresses, energies)):
        where = _Where(str(stress_file), k)
        if not isinstance(text, str):
            raise where.error("stress", f"expected a string 'a;b;...;i', got {text!r}")
        try:
            matrix = np.array([float(v) for v in text.split(";")])
        except ValueError:
            raise where.error("stress", f"not 9 numbers: {text!r}") from None
        if matrix.shape != (9,):
            raise where.error("stress", f"expected 9 numbers, got {matrix.size}")
        matrix = matrix.reshape(3, 3)
        if not np.isfinite(matrix).all():
            raise where.error("stress", f"non-finite value in {text!r}")
        raw = np.array([matrix[0, 0], matrix[1, 1], matrix[2, 2],
                        matrix[1, 2], matrix[0, 2], matrix[0, 1]])
        _symmetric_voigt(matrix, where, "stress")
        e = _Where(str(energy_file), k).number(energy, "energy")
        if structure.energy is None or abs(structure.energy - e) > 1e-6:
            raise DataError(f"energy {e} does not match the structure's {structure.energy}: "
                            "the files are not in the same order", source=str(energy_file),
                            index=k, field="energy")
        stress = -KBAR * _stress_from_components(raw, MLEARN_STRESS_ORDER[element])
        structures.append(structure.replace(stress=stress))
    return Dataset(structures, name=dataset.name)


def load_monbtaw(root: str | os.PathLike | None = None,
                 groups: Iterable[str] | None = None) -> Dataset:
    """MoNbTaW SNAP data (maml): all ``*.json`` files of the folder in sorted order, or ``groups``.

    config_type is the file stem (``Mo_AIMD``, ``NbTa_SS``, ``Multinary_Test``, ...).
    """
    folder = Path(root) if root is not None else data_root() / "monbtaw_snap_li2020"
    if groups is None:
        files = sorted(folder.glob("*.json"))
        if not files:
            raise DataError("no *.json files", source=str(folder))
    else:
        files = [folder / f"{g}.json" for g in groups]
    return Dataset.concatenate((read_maml_json(f) for f in files), name=str(folder))


# ---------------------------------------------------------------------------------------------
# FitSNAP JSON
# ---------------------------------------------------------------------------------------------
def read_fitsnap_json(path: str | os.PathLike, *, config_type: str | None = None,
                      _text: str | None = None) -> Dataset:
    """A FitSNAP JSON file: an optional ``#`` comment line, then ``{"Dataset": {...}}``.

    ``Dataset.Data`` is a list of configurations with ``AtomTypes``, ``Positions`` (Å),
    ``Lattice`` (rows = lattice vectors, Å), ``Energy`` (eV), ``Forces`` (eV/Å) and
    ``Stress`` (3x3 in ``StressStyle`` units: ``bar``, ``kbar`` or ``kB``, pressure sign ->
    multiplied by ``-unit``). Other ``*Style`` values than eV/Å/chemical symbols are refused.
    All configurations are periodic.
    """
    path = Path(path)
    source = str(path)
    text = _read_text(path) if _text is None else _text
    if text.lstrip().startswith("#"):
        text = text.lstrip().partition("\n")[2]
    where = _Where(source)
    dataset = where.get(_parse_json(text, source), "Dataset", dict)
    for key, expected in _FITSNAP_STYLES.items():
        style = dataset.get(key, expected)
        if style != expected:
            raise where.error(key, f"unsupported {key} {style!r} (expected {expected!r})")
    configs = where.get(dataset, "Data", list, "Dataset.Data")
    structures = []
    for k, config in enumerate(configs):
        where = _Where(source, k)
        symbols = where.get(config, "AtomTypes", list)
        numbers = symbols_to_numbers(symbols, source=source, index=k)
        n = len(numbers)
        n_declared = where.get(config, "NumAtoms", int)
        if n_declared != n:
            raise where.error("NumAtoms", f"NumAtoms = {n_declared} but {n} AtomTypes")
        fields: dict[str, Any] = {
            "positions": where.floats(where.get(config, "Positions", list), (n, 3), "Positions"),
            "numbers": numbers,
            "cell": where.floats(where.get(config, "Lattice", list), (3, 3), "Lattice"),
            "pbc": True,
        }
        if "Energy" in config:
            fields["energy"] = where.number(config["Energy"], "Energy")
        if "Forces" in config:
            fields["forces"] = where.floats(where.get(config, "Forces", list), (n, 3), "Forces")
        if "Stress" in config:
            style = where.get(dataset, "StressStyle", str, "StressStyle")
            unit = _FITSNAP_STRESS_UNITS.get(style.lower())
            if unit is None:
                raise where.error("StressStyle", f"unsupported StressStyle {style!r}")
            matrix = where.floats(where.get(config, "Stress", list), (3, 3), "Stress")
            if not np.isfinite(matrix).all():
                raise where.error("Stress", "non-finite value")
            fields["stress"] = -unit * _symmetric_voigt(matrix, where, "Stress")
        structures.append(_structure(where, config_type=config_type, **fields))
    return _dataset(structures, source)


def load_fitsnap(root: str | os.PathLike) -> Dataset:
    """All FitSNAP JSON files under ``root/JSON`` (or ``root`` itself), in sorted path order.

    config_type is the group, i.e. the first directory below ``JSON`` (``Volume_BCC``, ...).
    """
    root = Path(root)
    folder = root / "JSON" if (root / "JSON").is_dir() else root
    files = sorted(folder.rglob("*.json"))
    if not files:
        raise DataError("no FitSNAP *.json files", source=str(folder))
    return Dataset.concatenate(
        (read_fitsnap_json(f, config_type=f.relative_to(folder).parts[0]
                           if len(f.relative_to(folder).parts) > 1 else None) for f in files),
        name=str(root))


# ---------------------------------------------------------------------------------------------
# NOMAD 2018: CSV + FHI-aims geometry.in-style files
# ---------------------------------------------------------------------------------------------
def read_aims_geometry(path: str | os.PathLike, *, index: int | None = None,
                       properties: Mapping[str, float] | None = None) -> Structure:
    """One structure from an FHI-aims geometry file (``lattice_vector``/``atom`` lines).

    Only the keywords ``lattice_vector x y z``, ``atom x y z El`` (Cartesian Å) and
    ``atom_frac a b c El`` are accepted; ``#`` starts a comment. Zero or three lattice vectors
    (molecule or fully periodic crystal).
    """
    path = Path(path)
    where = _Where(str(path), index)
    lattice, cartesian, fractional, symbols = [], [], [], []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        keyword, expected = words[0], {"lattice_vector": 4, "atom": 5, "atom_frac": 5}
        if keyword not in expected:
            raise where.error(f"line {number}", f"unsupported keyword {keyword!r}")
        if len(words) != expected[keyword]:
            raise where.error(f"line {number}", f"expected {expected[keyword] - 1} values after "
                                                f"{keyword!r}, got {len(words) - 1}")
        try:
            vector = [float(w) for w in words[1:4]]
        except ValueError:
            raise where.error(f"line {number}", f"not three numbers: {line.strip()!r}") from None
        if keyword == "lattice_vector":
            lattice.append(vector)
        else:
            (fractional if keyword == "atom_frac" else cartesian).append((len(symbols), vector))
            symbols.append(words[4])
    if len(lattice) not in (0, 3):
        raise where.error("lattice_vector", f"expected 0 or 3 lattice vectors, got {len(lattice)}")
    if fractional and not lattice:
        raise where.error("atom_frac", "fractional coordinates need lattice vectors")
    cell = np.array(lattice, dtype=np.float64).reshape(-1, 3) if lattice else np.zeros((3, 3))
    positions = np.zeros((len(symbols), 3))
    for k, vector in cartesian:
        positions[k] = vector
    for k, vector in fractional:
        positions[k] = np.asarray(vector) @ cell
    return _structure(where, positions=positions,
                      numbers=symbols_to_numbers(symbols, source=str(path), index=index),
                      cell=cell, pbc=bool(lattice), properties=properties or {})


def load_nomad2018(root: str | os.PathLike | None = None, split: str = "train") -> Dataset:
    """NOMAD 2018 Kaggle TCO data: ``<split>.csv`` joined with ``<split>/<id>/geometry.xyz``.

    Every CSV column except ``id`` becomes a property (``formation_energy_ev_natom`` in
    eV/atom, ``bandgap_energy_ev`` in eV, ``spacegroup``, ``number_of_total_atoms``,
    ``percent_atom_al/ga/in``, lattice lengths in Å and angles in degrees); the structures
    carry no energy. ``number_of_total_atoms`` must match the geometry file.
    """
    root = Path(root) if root is not None else data_root() / "nomad2018_tco"
    if split not in _SPLITS:
        raise ConfigError(f"split must be one of {_SPLITS}, got {split!r}")
    table = root / f"{split}.csv"
    try:
        rows = list(csv.reader(_read_text(table).splitlines()))
    except csv.Error as error:
        raise DataError(f"malformed CSV ({error})", source=str(table)) from None
    if not rows:
        raise DataError("empty CSV file", source=str(table))
    header, rows = rows[0], rows[1:]
    required = {"id", "number_of_total_atoms"}
    if not required <= set(header) or len(set(header)) != len(header):
        raise DataError(f"CSV header must name distinct columns including {sorted(required)}, "
                        f"got {header}", source=str(table))
    structures = []
    for k, row in enumerate(rows):
        where = _Where(str(table), k)
        if len(row) != len(header):
            raise where.error(f"row {k + 2}", f"expected {len(header)} columns, got {len(row)}")
        values = {}
        for name, text in zip(header, row):
            try:
                values[name] = float(text)
            except ValueError:
                raise where.error(name, f"not a number: {text!r}") from None
        identifier = values.pop("id")
        if not identifier.is_integer() or identifier < 0:
            raise where.error("id", f"not a non-negative integer id: {identifier}")
        structure = read_aims_geometry(root / split / str(int(identifier)) / "geometry.xyz",
                                       index=k, properties=values)
        if structure.n_atoms != values["number_of_total_atoms"]:
            raise where.error("number_of_total_atoms", f"{values['number_of_total_atoms']} in "
                                                       f"the CSV but {structure.n_atoms} atoms")
        structures.append(structure)
    return _dataset(structures, str(table))


# ---------------------------------------------------------------------------------------------
# H2CO normal-mode data
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class VibrationalData:
    """Energies and forces on normal-mode coordinates (not atoms), validated on construction.

    Attributes
    ----------
    x : np.ndarray
        ``(N, d)`` coordinates (H2CO: mass-weighted normal modes in √mₑ·a₀, d = 6).
    y : np.ndarray
        ``(N,)`` energies, eV (H2CO: relative to −3112.1604302407663 eV).
    f : np.ndarray
        ``(N, d)`` forces ``-dE/dx`` (H2CO: eV/(√mₑ·a₀)).
    source : str, optional
        For error messages.
    """

    x: np.ndarray
    y: np.ndarray
    f: np.ndarray
    source: str | None = None

    def __post_init__(self) -> None:
        where = _Where(self.source or "VibrationalData")
        x = where.floats(self.x, (-1, -1), "x")
        y = where.floats(self.y, (-1,) if np.ndim(self.y) == 1 else (-1, 1), "y").reshape(-1)
        f = where.floats(self.f, x.shape, "f")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise where.error("x", f"empty data, shape {x.shape}")
        if y.shape[0] != x.shape[0]:
            raise where.error("y", f"{y.shape[0]} energies for {x.shape[0]} points")
        for name, array in (("x", x), ("y", y), ("f", f)):
            bad = np.argwhere(~np.isfinite(array))
            if bad.size:
                raise DataError(f"non-finite value at {tuple(int(k) for k in bad[0])}",
                                source=where.source,
                                index=int(bad[0][0]), field=name)
            array.flags.writeable = False
            object.__setattr__(self, name, array)

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _malformed(path: Path, error: Exception) -> DataError:
    return DataError(f"malformed array file ({type(error).__name__}: {error})", source=str(path))


def _load_npy(path: Path) -> np.ndarray:
    """The array of a ``.npy`` file (pickled objects are refused)."""
    if not path.is_file():
        raise DataError("file not found", source=str(path))
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as error:  # numpy raises many types for malformed headers and data
        raise _malformed(path, error) from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise DataError("not a .npy array file", source=str(path))
    return array


def _load_npz(path: Path, names: Sequence[str]) -> list[np.ndarray]:
    """Arrays ``names`` of a ``.npz`` archive (pickled objects are refused)."""
    if not path.is_file():
        raise DataError("file not found", source=str(path))
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as error:
        raise _malformed(path, error) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError("not an .npz archive", source=str(path))
    with archive:
        missing = [name for name in names if name not in archive.files]
        if missing:
            raise DataError(f"missing arrays {missing} (found {archive.files})",
                            source=str(path))
        try:
            return [np.asarray(archive[name]) for name in names]
        except Exception as error:  # zipfile/zlib/numpy errors of a corrupted member
            raise _malformed(path, error) from None


def read_vibrational_npz(path: str | os.PathLike) -> VibrationalData:
    """A ``.npz`` file holding arrays ``x`` (N, d), ``y`` (N,) and ``f`` (N, d)."""
    path = Path(path)
    x, y, f = _load_npz(path, ("x", "y", "f"))
    return VibrationalData(x=x, y=y, f=f, source=str(path))


def load_h2co(directory: str | os.PathLike | None = None,
              split: str = "train") -> VibrationalData:
    """H2CO arrays ``{x,y,f}_<split>.npy`` (Pompon; split ``train`` or ``validation``)."""
    directory = Path(directory) if directory is not None else data_root() / "h2co_pompon"
    if split not in ("train", "validation"):
        raise ConfigError(f"split must be 'train' or 'validation', got {split!r}")
    arrays = [_load_npy(directory / f"{name}_{split}.npy") for name in "xyf"]
    return VibrationalData(*arrays, source=str(directory / f"*_{split}.npy"))

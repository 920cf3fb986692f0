"""Fuzzing every loader with malformed files: a valid Dataset or an EntangleError, nothing else.

Each example takes one of the hand-made sample files (see conftest.py) and truncates it,
overwrites random bytes (any, or printable ASCII), replaces a number by NaN/inf/garbage, or
deletes/duplicates a line;
the arrays loader also gets arrays of random shapes and dtypes with injected NaNs. In total
1,400 examples, each with a deadline.
"""

import re
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entangle.data import (
    MIN_DISTANCE,
    Dataset,
    VibrationalData,
    load_h2co,
    load_nomad2018,
    read_extxyz,
    read_fitsnap_json,
    read_maml_json,
    read_mlearn_json,
    read_vibrational_npz,
)
from entangle.errors import EntangleError

NUMBER = re.compile(rb"-?\d+\.?\d*(?:[eE][-+]?\d+)?")
GARBAGE = [b"nan", b"NaN", b"inf", b"-Infinity", b"1e999", b"-1e-999", b"", b"x", b"0",
           b"99999999999999999999999", b"null", b"true", b'"1.0"', b"[]", b"1.0 2.0"]


def fuzz_settings(examples: int):
    return settings(max_examples=examples, deadline=timedelta(seconds=5), database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """``original`` with one kind of damage."""
    kind = draw(st.sampled_from(["truncate", "bytes", "text", "number", "number", "line"]))
    data = bytearray(original)
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind in ("bytes", "text"):  # any byte, or printable ASCII that keeps the file UTF-8
        low, high = (0, 255) if kind == "bytes" else (32, 126)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(low, high))
        return bytes(data)
    if kind == "number":
        numbers = list(NUMBER.finditer(original))
        match = numbers[draw(st.integers(0, len(numbers) - 1))]
        return original[: match.start()] + draw(st.sampled_from(GARBAGE)) + original[match.end():]
    lines = original.splitlines(keepends=True)
    k = draw(st.integers(0, len(lines) - 1))
    if draw(st.booleans()):
        del lines[k]
    else:
        lines.insert(k, lines[k])
    return b"".join(lines)


def assert_valid(result) -> None:
    """Independent checks of what a loader returned (the Structure checks are not trusted)."""
    if isinstance(result, VibrationalData):
        assert len(result) >= 1 and result.x.shape == result.f.shape
        assert all(np.isfinite(a).all() for a in (result.x, result.y, result.f))
        return
    assert isinstance(result, Dataset) and len(result) >= 1
    for s in result:
        n = s.n_atoms
        assert n >= 1 and s.positions.shape == (n, 3) and s.numbers.shape == (n,)
        assert ((s.numbers >= 1) & (s.numbers <= 118)).all()
        for array in (s.positions, s.cell, s.forces, s.stress):
            assert array is None or np.isfinite(array).all()
        assert s.energy is None or np.isfinite(s.energy)
        assert s.forces is None or s.forces.shape == (n, 3)
        assert s.stress is None or (s.stress.shape == (6,) and s.pbc.all())
        if np.abs(s.cell).max() < 1e3 and np.ptp(s.positions, axis=0).max() < 1e3:
            # ASE bins space by the cutoff; beyond this size that takes too long.
            atoms = Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=s.pbc)
            assert neighbor_list("d", atoms, MIN_DISTANCE).size == 0


def check(load, path: Path) -> None:
    try:
        result = load(path)
    except EntangleError:
        return
    assert_valid(result)


def _fuzz_file(samples, key, loader, data, name):
    original = samples[key].read_bytes()
    damaged = data.draw(mutated(original))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(damaged)
        check(loader, path)


@fuzz_settings(250)
@given(data=st.data())
def test_fuzz_extxyz(samples, data):
    _fuzz_file(samples, "extxyz", read_extxyz, data, "small.extxyz")


@fuzz_settings(100)
@given(data=st.data())
def test_fuzz_extxyz_force_key(samples, data):
    _fuzz_file(samples, "force_key", read_extxyz, data, "force.xyz")


@fuzz_settings(200)
@given(data=st.data())
def test_fuzz_mlearn_json(samples, data):
    _fuzz_file(samples, "mlearn", read_mlearn_json, data, "mlearn.json")


@fuzz_settings(100)
@given(data=st.data())
def test_fuzz_maml_json(samples, data):
    _fuzz_file(samples, "maml", read_maml_json, data, "W_Elastic.json")


@fuzz_settings(200)
@given(data=st.data())
def test_fuzz_fitsnap_json(samples, data):
    _fuzz_file(samples, "fitsnap", read_fitsnap_json, data, "Ta.json")


@fuzz_settings(200)
@given(data=st.data())
def test_fuzz_nomad(samples, data):
    target = data.draw(st.sampled_from(["train.csv", "train/1/geometry.xyz"]))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "nomad"
        shutil.copytree(samples["nomad"], root)
        (root / target).write_bytes(data.draw(mutated((root / target).read_bytes())))
        check(lambda r: load_nomad2018(r, "train"), root)


@fuzz_settings(150)
@given(data=st.data())
def test_fuzz_npy_and_npz_bytes(samples, data):
    target = data.draw(st.sampled_from(["x_train.npy", "y_train.npy", "vib.npz"]))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for path in samples["vibrational"].iterdir():
            shutil.copy(path, root)
        (root / target).write_bytes(data.draw(mutated((root / target).read_bytes())))
        if target.endswith(".npz"):
            check(read_vibrational_npz, root / target)
        else:
            check(lambda r: load_h2co(r, "train"), root)


@st.composite
def arrays(draw) -> np.ndarray:
    shape = tuple(draw(st.lists(st.integers(0, 7), min_size=0, max_size=3)))
    dtype = draw(st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.complex128]))
    values = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape)
    array = values.astype(dtype) if dtype is not np.bool_ else values > 0
    if array.size and array.dtype.kind == "f" and draw(st.booleans()):
        array.reshape(-1)[draw(st.integers(0, array.size - 1))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf]))
    return array


@fuzz_settings(200)
@given(x=arrays(), y=arrays(), f=arrays(), container=st.sampled_from(["npy", "npz"]))
def test_fuzz_array_shapes_and_values(x, y, f, container):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        if container == "npz":
            np.savez(root / "v.npz", x=x, y=y, f=f)
            check(read_vibrational_npz, root / "v.npz")
        else:
            for name, array in zip("xyf", (x, y, f)):
                np.save(root / f"{name}_train.npy", array)
            check(lambda r: load_h2co(r, "train"), root)

"""Loaders on small hand-made files: values, units, stress conventions and error reports."""

import json
import shutil

import numpy as np
import pytest

from entangle.data import (
    BAR,
    KBAR,
    VASP_ORDER,
    Dataset,
    VibrationalData,
    attach_jarvis_stress,
    load,
    load_h2co,
    load_nomad2018,
    read_aims_geometry,
    read_extxyz,
    read_fitsnap_json,
    read_maml_json,
    read_mlearn_json,
    read_vibrational_npz,
)
from entangle.errors import ConfigError, DataError


def ase_voigt(xx, yy, zz, yz, xz, xy):
    return np.array([xx, yy, zz, yz, xz, xy], dtype=float)


# ---------------------------------------------------------------------------------- extxyz
def test_extxyz_reads_labels_config_type_and_properties(samples):
    data = read_extxyz(samples["extxyz"])
    assert len(data) == 2 and data.species.tolist() == [1, 8, 29]
    cu, water = data
    assert cu.energy == -14.9 and cu.config_type == "bulk"
    assert cu.properties == {"temperature": 300.0}
    np.testing.assert_allclose(cu.stress, [0.01, 0.02, 0.03, 0.001, 0.002, 0.003])
    assert cu.forces.shape == (4, 3) and cu.pbc.all()
    assert water.stress is None and not water.pbc.any() and water.forces.shape == (3, 3)
    assert (cu.source, cu.index, water.index) == (str(samples["extxyz"]), 0, 1)


def test_extxyz_force_key_variant(samples):
    (mo,) = read_extxyz(samples["force_key"])
    assert mo.energy == -21.6
    np.testing.assert_array_equal(mo.forces, [[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]])
    (same,) = read_extxyz(samples["force_key"], forces_key="force", config_type="bcc")
    assert same.config_type == "bcc"
    (unlabelled,) = read_extxyz(samples["force_key"], forces_key="forces")
    assert unlabelled.forces is None


def test_extxyz_errors_name_the_file(samples, tmp_path):
    text = samples["extxyz"].read_text()
    bad = tmp_path / "bad.xyz"
    bad.write_text(text.replace("-14.9", "nan"))
    with pytest.raises(DataError, match=r"bad\.xyz: structure 0: energy"):
        read_extxyz(bad)
    lines = text.splitlines()
    bad.write_text("\n".join(lines[:4]) + "\n")  # truncated inside the first frame
    with pytest.raises(DataError, match=r"bad\.xyz: structure 0: line 1: header announces 4"):
        read_extxyz(bad)
    bad.write_text(text.replace("pos:R:3", "pos:R:99999999999999999999"))  # ASE would hang
    with pytest.raises(DataError, match="Properties"):
        read_extxyz(bad)
    bad.write_text("\n".join(lines[:2] + [line[:30] for line in lines[2:6]]) + "\n")
    with pytest.raises(DataError, match=r"bad\.xyz: malformed extxyz"):
        read_extxyz(bad)  # atom lines cut short
    bad.write_text("")
    with pytest.raises(DataError, match="no structures"):
        read_extxyz(bad)
    with pytest.raises(DataError, match="file not found"):
        read_extxyz(tmp_path / "missing.xyz")


# ----------------------------------------------------------------------------- mlearn / maml
def test_mlearn_json_units_sign_and_element_order(samples):
    data = read_mlearn_json(samples["mlearn"])
    assert [s.config_type for s in data] == ["Elastic", "AIMD-NVT"]
    first, second = data
    assert first.energy == -21.6 and first.n_atoms == 2
    np.testing.assert_allclose(second.cell[1], [0.1, 3.16, 0.0])
    np.testing.assert_allclose(second.positions[1], [1.63, 1.58, 1.58])
    # Mo order is xx yy zz xy zx yz; pressure sign -> minus; kbar -> eV/Å^3.
    np.testing.assert_allclose(first.stress, -KBAR * ase_voigt(10, 20, 30, 3, 2, 1))
    np.testing.assert_allclose(second.stress, -KBAR * ase_voigt(5, 6, 7, 0.25, 0.5, -40))
    vasp = read_mlearn_json(samples["mlearn"], stress_order=VASP_ORDER)
    np.testing.assert_allclose(vasp[0].stress, -KBAR * ase_voigt(10, 20, 30, 2, 3, 1))


def test_mlearn_unknown_element_needs_an_order(samples, tmp_path):
    records = json.loads(samples["mlearn"].read_text())
    records[1]["element"] = "Fe"
    path = tmp_path / "fe.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match=r"fe\.json: structure 1: element"):
        read_mlearn_json(path)
    assert len(read_mlearn_json(path, stress_order=VASP_ORDER)) == 2
    with pytest.raises(ConfigError):
        read_mlearn_json(path, stress_order=("xx", "yy", "zz", "xy", "xy", "yz"))


@pytest.mark.parametrize("edit, field", [
    (lambda r: r[0]["outputs"].pop("energy"), "outputs.energy"),
    (lambda r: r[0]["outputs"].__setitem__("forces", [[0, 0, 0]]), "outputs.forces"),
    (lambda r: r[0]["outputs"].__setitem__("virial_stress", [1, 2, 3]), "virial_stress"),
    (lambda r: r[1]["outputs"].__setitem__("energy", "low"), "outputs.energy"),
    (lambda r: r[1]["outputs"].__setitem__("energy", 10**400), "outputs.energy"),
    (lambda r: r[1]["outputs"]["forces"][0].__setitem__(0, 10**30), "outputs.forces"),
    (lambda r: r[1]["structure"]["sites"][0]["species"][0].__setitem__("element", "Xx"),
     "symbols"),
    (lambda r: r[1]["structure"]["sites"][0]["species"][0].__setitem__("occu", 0.5),
     "sites[0]"),
    (lambda r: r[1]["structure"]["sites"][0].__setitem__("xyz", [0, 0, None]), "xyz"),
    (lambda r: r[1].__setitem__("num_atoms", 3), "num_atoms"),
    (lambda r: r[1]["structure"]["lattice"].__setitem__("matrix", [[0] * 3] * 3), "cell"),
    (lambda r: r[1]["structure"].__setitem__("lattice", []), "lattice"),
])
def test_mlearn_malformed_records(samples, tmp_path, edit, field):
    records = json.loads(samples["mlearn"].read_text())
    edit(records)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DataError) as info:
        read_mlearn_json(path)
    assert str(info.value).startswith(f"{path}: structure ")
    assert field in str(info.value)


def test_truncated_json_is_a_data_error(samples, tmp_path):
    path = tmp_path / "cut.json"
    path.write_text(samples["mlearn"].read_text()[:300])
    with pytest.raises(DataError, match=r"cut\.json: malformed JSON"):
        read_mlearn_json(path)


def test_maml_json_vasp_order_and_file_stem(samples):
    (w,) = read_maml_json(samples["maml"])
    assert w.config_type == "W_Elastic" and w.numbers.tolist() == [74, 74]
    np.testing.assert_allclose(w.stress, -KBAR * ase_voigt(1, 2, 3, 0.5, 0.25, -40))


# ----------------------------------------------------------------------------------- FitSNAP
def test_fitsnap_json(samples):
    (ta,) = read_fitsnap_json(samples["fitsnap"], config_type="Volume_BCC")
    assert ta.energy == -23.7 and ta.config_type == "Volume_BCC" and ta.pbc.all()
    np.testing.assert_allclose(ta.cell[2], [0.1, 0.0, 3.3])
    np.testing.assert_allclose(ta.stress, -BAR * ase_voigt(1e4, 2e4, 3e4, 0, 0, 50))
    np.testing.assert_allclose(ta.forces, [[0.0, 0.1, 0.0], [0.0, -0.1, 0.0]])


@pytest.mark.parametrize("old, new, match", [
    ('"StressStyle": "bar"', '"StressStyle": "atm"', "StressStyle"),
    ('"LatticeStyle": "angstrom"', '"LatticeStyle": "bohr"', "LatticeStyle"),
    ('"NumAtoms": 2', '"NumAtoms": 3', "NumAtoms"),
    ('[50.0, 20000.0, 0.0]', '[51.0, 20000.0, 0.0]', "not symmetric"),
    ('"Energy": -23.7', '"Energy": null', "Energy"),
    ('"AtomTypes": ["Ta", "Ta"]', '"AtomTypes": ["Ta", "Tx"]', "unknown chemical symbol"),
])
def test_fitsnap_malformed(samples, tmp_path, old, new, match):
    text = samples["fitsnap"].read_text()
    assert old in text
    path = tmp_path / "bad_fitsnap.json"
    path.write_text(text.replace(old, new))
    with pytest.raises(DataError, match=match) as info:
        read_fitsnap_json(path)
    assert str(info.value).startswith(str(path))


# ------------------------------------------------------------------------------------- NOMAD
def test_nomad_csv_and_geometry(samples):
    data = load_nomad2018(samples["nomad"], "train")
    assert len(data) == 2 and data.species.tolist() == [8, 13, 31]
    first = data[0]
    assert first.energy is None and first.pbc.all()
    assert first.properties["formation_energy_ev_natom"] == 0.068
    assert first.properties["bandgap_energy_ev"] == 3.4387
    assert first.properties["spacegroup"] == 33 and "id" not in first.properties
    np.testing.assert_allclose(first.cell[2], [0.5, 0.0, 5.0])
    np.testing.assert_allclose(data.property("spacegroup"), [33, 194])


def test_nomad_errors(samples, tmp_path):
    root = tmp_path / "nomad"
    shutil.copytree(samples["nomad"], root)
    table = root / "train.csv"
    text = table.read_text()
    table.write_text(text.replace("1,33,4.0", "1,33,5.0"))
    with pytest.raises(DataError, match="number_of_total_atoms"):
        load_nomad2018(root, "train")
    table.write_text(text.replace("\n2,194", "\n3,194"))
    with pytest.raises(DataError, match=r"train/3/geometry\.xyz: file not found"):
        load_nomad2018(root, "train")
    table.write_text(text.replace("0.068", "zero"))
    with pytest.raises(DataError, match="structure 0: formation_energy_ev_natom: not a number"):
        load_nomad2018(root, "train")
    with pytest.raises(ConfigError):
        load_nomad2018(root, "validation")


@pytest.mark.parametrize("line, match", [
    ("initial_moment 1.0", "unsupported keyword"),
    ("atom 1.0 1.0 Al", "expected 4 values"),
    ("atom 1.0 1.0 x Al", "not three numbers"),
    ("atom 1.0 1.0 1.0 Qq", "unknown chemical symbol"),
    ("atom 0.01 0.0 0.0 Al", "0.01 Å apart"),
    ("atom 1.0 1.0 nan Al", "non-finite"),
])
def test_aims_geometry_errors(samples, tmp_path, line, match):
    path = tmp_path / "geometry.xyz"
    path.write_text((samples["nomad"] / "train" / "1" / "geometry.xyz").read_text() + line)
    with pytest.raises(DataError, match=match):
        read_aims_geometry(path)


def test_aims_geometry_fractional_and_molecule(tmp_path):
    path = tmp_path / "geometry.in"
    path.write_text("lattice_vector 4 0 0\nlattice_vector 0 4 0\nlattice_vector 0 0 4\n"
                    "atom_frac 0.5 0.25 0.0 Ga  # a comment\n")
    np.testing.assert_allclose(read_aims_geometry(path).positions, [[2.0, 1.0, 0.0]])
    path.write_text("atom 0 0 0 O\natom 0 0 0.97 H\n")
    assert not read_aims_geometry(path).pbc.any()
    path.write_text("lattice_vector 4 0 0\natom 0 0 0 O\n")
    with pytest.raises(DataError, match="0 or 3 lattice vectors"):
        read_aims_geometry(path)


# ------------------------------------------------------------------------------ arrays (H2CO)
def test_vibrational_arrays(samples, tmp_path):
    data = load_h2co(samples["vibrational"], "train")
    assert data.x.shape == (5, 6) and data.y.shape == (5,) and data.f.shape == (5, 6)
    np.testing.assert_array_equal(data.y, np.load(samples["vibrational"] / "y_train.npy")[:, 0])
    npz = read_vibrational_npz(samples["npz"])
    np.testing.assert_array_equal(npz.x, data.x)
    with pytest.raises(DataError, match="f"):
        VibrationalData(x=np.zeros((4, 6)), y=np.zeros(4), f=np.zeros((4, 5)))
    with pytest.raises(DataError, match="energies"):
        VibrationalData(x=np.zeros((4, 6)), y=np.zeros(3), f=np.zeros((4, 6)))
    with pytest.raises(DataError, match="structure 2: y: non-finite"):
        VibrationalData(x=np.zeros((4, 6)), y=[0, 0, np.nan, 0], f=np.zeros((4, 6)))
    np.save(tmp_path / "x_train.npy", np.array([{"a": 1}], dtype=object))
    for name in "yf":
        shutil.copy(samples["vibrational"] / f"{name}_train.npy", tmp_path)
    with pytest.raises(DataError, match=r"x_train\.npy: malformed array file"):
        load_h2co(tmp_path, "train")  # pickled objects are refused
    np.savez(tmp_path / "partial.npz", x=data.x, y=data.y)
    with pytest.raises(DataError, match="missing arrays"):
        read_vibrational_npz(tmp_path / "partial.npz")


# ---------------------------------------------------------------------------- JARVIS join
def test_attach_jarvis_stress_undoes_the_ase_order_assembly(samples, tmp_path):
    structures = read_extxyz(samples["force_key"])
    v = [10.0, 20.0, 30.0, 1.0, 2.0, 3.0]  # an mlearn 6-vector, Mo order xx yy zz xy zx yz
    assembled = [[v[0], v[5], v[4]], [v[5], v[1], v[3]], [v[4], v[3], v[2]]]  # JARVIS' way
    stress_file, energy_file = tmp_path / "stresses.json", tmp_path / "energy.json"
    stress_file.write_text(json.dumps(
        {"train": {"Mo-1": ";".join(str(x) for row in assembled for x in row)}, "test": {}}))
    energy_file.write_text(json.dumps({"train": {"Mo-1": -21.6}, "test": {}}))
    (joined,) = attach_jarvis_stress(structures, stress_file, energy_file, split="train",
                                     element="Mo")
    np.testing.assert_allclose(joined.stress, -KBAR * ase_voigt(10, 20, 30, 3, 2, 1))
    energy_file.write_text(json.dumps({"train": {"Mo-1": -21.7}, "test": {}}))
    with pytest.raises(DataError, match="not in the same order"):
        attach_jarvis_stress(structures, stress_file, energy_file, split="train", element="Mo")


# -------------------------------------------------------------------------------------- load
def test_load_dispatches_on_format(samples):
    assert len(load(samples["extxyz"])) == 2
    assert load(str(samples["mlearn"]))[0].config_type == "Elastic"
    assert load(samples["maml"])[0].config_type == "W_Elastic"
    assert load(samples["fitsnap"])[0].energy == -23.7
    assert len(load(samples["nomad"], split="train")) == 2
    assert len(load(samples["nomad"] / "train.csv")) == 2
    assert load(samples["nomad"] / "train" / "1" / "geometry.xyz")[0].n_atoms == 4
    assert isinstance(load(samples["npz"]), VibrationalData)
    assert isinstance(load(samples["vibrational"], split="train"), VibrationalData)
    assert isinstance(load(samples["extxyz"]), Dataset)


def test_load_short_names_use_the_data_root(samples, tmp_path, monkeypatch):
    shutil.copytree(samples["nomad"], tmp_path / "nomad2018_tco")
    monkeypatch.setenv("ENTANGLE_DATA", str(tmp_path))
    assert len(load("nomad2018:train")) == 2
    assert len(load("nomad2018_tco/train.csv")) == 2  # relative to the data root
    for name in ("nomad2018:valid", "mlearn:Fe:train", "mlearn:Mo", "nope", "fitsnap:W"):
        with pytest.raises(ConfigError):
            load(name)
    with pytest.raises(ConfigError, match="unexpected keyword"):
        load("nomad2018:train", colour="red")
    with pytest.raises(DataError, match="file not found"):
        load("mlearn:Mo:train")  # a valid name whose file is absent

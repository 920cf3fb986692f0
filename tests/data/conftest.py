"""Small, hand-made sample files in each format the loaders read (written to a temp dir).

The extxyz sample is written by ASE (an independent writer); the JSON, CSV and FHI-aims
samples are plain text in the layout of the public files (see /work/shared/data/README.md).
"""

import json
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

MO_CELL = [[3.16, 0.0, 0.0], [0.0, 3.16, 0.0], [0.0, 0.0, 3.16]]
MO_SHEARED = [[3.16, 0.0, 0.0], [0.1, 3.16, 0.0], [0.0, 0.0, 3.16]]


def _extxyz(path: Path) -> None:
    rng = np.random.default_rng(0)
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.positions += 0.05 * rng.standard_normal(cu.positions.shape)
    cu.calc = SinglePointCalculator(cu, energy=-14.9, forces=0.1 * rng.standard_normal((4, 3)),
                                    stress=np.array([0.01, 0.02, 0.03, 0.001, 0.002, 0.003]))
    cu.info.update(config_type="bulk", temperature=300.0)
    water = molecule("H2O")
    water.calc = SinglePointCalculator(water, energy=-14.2,
                                       forces=0.2 * rng.standard_normal((3, 3)))
    write(path, [cu, water], format="extxyz")


FORCE_KEY_XYZ = """2
pbc="T T T" energy=-21.6 Lattice="3.16 0.0 0.0 0.0 3.16 0.0 0.0 0.0 3.16" Properties=species:S:1:pos:R:3:force:R:3
Mo 0.0 0.0 0.0 0.1 0.2 0.3
Mo 1.58 1.58 1.58 -0.1 -0.2 -0.3
"""


def _pymatgen_record(matrix, frac, symbol, energy, forces, stress_key, stress, **extra):
    matrix = np.array(matrix)
    sites = [{"species": [{"element": symbol, "occu": 1}], "abc": list(f),
              "xyz": list(np.array(f) @ matrix), "label": symbol} for f in frac]
    return {"structure": {"@module": "pymatgen.core.structure", "@class": "Structure",
                          "charge": 0, "lattice": {"matrix": matrix.tolist()}, "sites": sites},
            "num_atoms": len(frac), "outputs": {"energy": energy, "forces": forces,
                                                stress_key: stress}, **extra}


def _mlearn(path: Path) -> None:
    frac = [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]
    records = [
        _pymatgen_record(MO_CELL, frac, "Mo", -21.6, [[0.0] * 3, [0.0] * 3], "virial_stress",
                         [10.0, 20.0, 30.0, 1.0, 2.0, 3.0], element="Mo", group="Elastic",
                         tag="train", description="Ground state"),
        _pymatgen_record(MO_SHEARED, frac, "Mo", -21.5, [[0.1, 0.0, 0.0], [-0.1, 0.0, 0.0]],
                         "virial_stress", [5.0, 6.0, 7.0, -40.0, 0.5, 0.25], element="Mo",
                         group="AIMD-NVT", tag="train", description="Snapshot"),
    ]
    path.write_text(json.dumps(records))


def _maml(path: Path) -> None:
    frac = [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]
    records = [_pymatgen_record(MO_SHEARED, frac, "W", -25.0, [[0.0] * 3, [0.0] * 3], "stress",
                                [1.0, 2.0, 3.0, -40.0, 0.5, 0.25], group="W", tags=["x"])]
    path.write_text(json.dumps(records))


def _fitsnap(path: Path) -> None:
    data = {"Dataset": {"Data": [
        {"Stress": [[1.0e4, 50.0, 0.0], [50.0, 2.0e4, 0.0], [0.0, 0.0, 3.0e4]],
         "Positions": [[0.0, 0.0, 0.0], [1.65, 1.65, 1.65]], "Energy": -23.7,
         "AtomTypes": ["Ta", "Ta"], "Lattice": [[3.3, 0.0, 0.0], [0.0, 3.3, 0.0],
                                                 [0.1, 0.0, 3.3]],
         "NumAtoms": 2, "Forces": [[0.0, 0.1, 0.0], [0.0, -0.1, 0.0]]}],
        "PositionsStyle": "angstrom", "AtomTypeStyle": "chemicalsymbol",
        "Label": "hand-made", "StressStyle": "bar", "LatticeStyle": "angstrom",
        "EnergyStyle": "electronvolt", "ForcesStyle": "electronvoltperangstrom"}}
    path.write_text("# A hand-made FitSNAP file\n" + json.dumps(data))


NOMAD_HEADER = ("id,spacegroup,number_of_total_atoms,percent_atom_al,percent_atom_ga,"
                "percent_atom_in,lattice_vector_1_ang,lattice_vector_2_ang,lattice_vector_3_ang,"
                "lattice_angle_alpha_degree,lattice_angle_beta_degree,lattice_angle_gamma_degree,"
                "formation_energy_ev_natom,bandgap_energy_ev")
NOMAD_GEOMETRY = """#=======================================================
#Created by hand
#=======================================================
lattice_vector 5.0000000000000000 0.0000000000000000 0.0000000000000000
lattice_vector 0.0000000000000000 5.0000000000000000 0.0000000000000000
lattice_vector 0.5000000000000000 0.0000000000000000 5.0000000000000000
atom 0.0000000000000000 0.0000000000000000 0.0000000000000000 Al
atom 2.5000000000000000 2.5000000000000000 0.0000000000000000 Ga
atom 2.5000000000000000 0.0000000000000000 2.5000000000000000 O
atom 0.0000000000000000 2.5000000000000000 2.5000000000000000 O
"""


def _nomad(root: Path) -> None:
    rows = [NOMAD_HEADER,
            "1,33,4.0,0.5,0.5,0.0,5.0,5.0,5.0249,90.0,84.29,90.0,0.068,3.4387",
            "2,194,4.0,0.5,0.5,0.0,5.0,5.0,5.0249,90.0,84.29,90.0,0.249,2.921"]
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    for k in (1, 2):
        (root / "train" / str(k)).mkdir(parents=True)
        (root / "train" / str(k) / "geometry.xyz").write_text(NOMAD_GEOMETRY)


def _vibrational(root: Path) -> None:
    rng = np.random.default_rng(1)
    x, y, f = rng.standard_normal((5, 6)), rng.standard_normal((5, 1)), rng.standard_normal((5, 6))
    for name, array in zip("xyf", (x, y, f)):
        np.save(root / f"{name}_train.npy", array)
    np.savez(root / "vib.npz", x=x, y=y[:, 0], f=f)


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> dict[str, Path]:
    """Paths of the hand-made sample files, by format."""
    root = tmp_path_factory.mktemp("samples")
    paths = {"extxyz": root / "small.extxyz", "force_key": root / "force_key.xyz",
             "mlearn": root / "mlearn.json", "maml": root / "W_Elastic.json",
             "fitsnap": root / "Ta_small.json", "nomad": root / "nomad",
             "vibrational": root / "vib"}
    _extxyz(paths["extxyz"])
    paths["force_key"].write_text(FORCE_KEY_XYZ)
    _mlearn(paths["mlearn"])
    _maml(paths["maml"])
    _fitsnap(paths["fitsnap"])
    paths["nomad"].mkdir()
    _nomad(paths["nomad"])
    paths["vibrational"].mkdir()
    _vibrational(paths["vibrational"])
    paths["npz"] = paths["vibrational"] / "vib.npz"
    return paths

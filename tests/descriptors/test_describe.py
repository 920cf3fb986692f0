import numpy as np
import pytest
from descriptor_samples import cuau_cell, molecule, triclinic_cell
from dscribe.descriptors import SOAP as DScribeSOAP

from entangle.data import Dataset, Structure, load
from entangle.descriptors import SOAP, SOAPConfig, describe_file, dscribe_indices
from entangle.errors import ConfigError, DataError


def frames():
    return Dataset([Structure.from_ase(cuau_cell(10, repeat=1)),
                    Structure.from_ase(triclinic_cell(11)),
                    Structure.from_ase(cuau_cell(12, repeat=1))])


def test_streamed_file_equals_in_memory_result(tmp_path):
    data = frames()
    out = describe_file(data, tmp_path / "soap.npz", ["Au", "Cu"], 4.0, 3, 2, 0.5,
                        batch_size=2, progress=False)
    assert out == tmp_path / "soap.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soap.npz"]  # no temporary left
    with np.load(out) as archive:
        power = archive["power_spectrum"]
        index = archive["structure_index"]
        assert list(archive["species"]) == [79, 29]
        assert int(archive["n_max"]) == 3 and int(archive["l_max"]) == 2
        assert float(archive["r_cut"]) == 4.0 and float(archive["sigma"]) == 0.5
    assert power.shape == (11, 2, 2, 3, 3, 3) and power.dtype == np.float64
    np.testing.assert_array_equal(index, [0] * 4 + [1] * 3 + [2] * 4)
    soap = SOAP(SOAPConfig(species=("Au", "Cu"), r_cut=4.0, n_max=3, l_max=2, sigma=0.5))
    np.testing.assert_allclose(power, soap(list(data)).power_spectrum.numpy(), rtol=1e-13,
                               atol=1e-13)
    reference = DScribeSOAP(species=["Au", "Cu"], r_cut=4.0, n_max=3, l_max=2, sigma=0.5,
                            periodic=True).create([s.to_ase() for s in data])
    flat = power.reshape(11, -1)[:, dscribe_indices(["Au", "Cu"], 3, 2)]
    np.testing.assert_allclose(flat, np.concatenate(reference), rtol=1e-8,
                               atol=1e-10 * np.abs(flat).max())


def test_unknown_species_fails_before_writing(tmp_path):
    data = Dataset([Structure.from_ase(cuau_cell(13, repeat=1)), Structure.from_ase(molecule())])
    with pytest.raises(DataError, match="structure 1"):
        describe_file(data, tmp_path / "bad.npz", ["Cu", "Au"], 4.0, 3, 2, 0.5, 1,
                      progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError):
        describe_file(frames(), tmp_path / "bad.npz", ["Cu", "Au"], 4.0, 3, 2, 0.5, 0,
                      progress=False)


def test_describe_a_shared_dataset_file(shared_data, tmp_path):
    path = shared_data / "zuo2020_xyz_acedata" / "Cu_test.xyz"
    data = load(path)[:4]
    out = describe_file(data, tmp_path / "cu.npz", ["Cu"], 4.5, 4, 3, 0.5, batch_size=3,
                        progress=False)
    with np.load(out) as archive:
        power = archive["power_spectrum"]
    reference = DScribeSOAP(species=["Cu"], r_cut=4.5, n_max=4, l_max=3, sigma=0.5,
                            periodic=True).create([s.to_ase() for s in data])
    flat = power.reshape(power.shape[0], -1)[:, dscribe_indices(["Cu"], 4, 3)]
    np.testing.assert_allclose(flat, np.concatenate(reference), rtol=1e-8,
                               atol=1e-10 * np.abs(flat).max())
    # the same file through the loader
    whole = describe_file(path, tmp_path / "cu_all.npz", ["Cu"], 4.5, 4, 3, 0.5,
                          batch_size=16, progress=False)
    with np.load(whole) as archive:
        assert archive["power_spectrum"].shape[0] == int(sum(s.n_atoms for s in load(path)))
        np.testing.assert_allclose(archive["power_spectrum"][: power.shape[0]], power,
                                   rtol=1e-12, atol=1e-12)

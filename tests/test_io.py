import dataclasses
import json

import pytest
import torch

from entangle import io
from entangle.errors import ModelFileError


@dataclasses.dataclass
class TinyConfig:
    n: int = 3
    bond: int = 2


@io.register_model
class Tiny(torch.nn.Module):
    def __init__(self, n: int = 3, bond: int = 2):
        super().__init__()
        self.config = TinyConfig(n, bond)
        self.core = torch.nn.Parameter(torch.randn(n, bond, dtype=torch.float64))
        self.register_buffer("scale", torch.tensor(2.0, dtype=torch.float64))

    def forward(self, x):
        return (x @ self.core).sum(-1) * self.scale


class Unregistered(Tiny):
    pass


def test_roundtrip_identical_predictions(tmp_path):
    model = Tiny()
    with torch.no_grad():
        model.core.mul_(3.0)
    w, j = io.save(model, tmp_path / "run" / "model", metadata={"rmse_ev": 0.1})
    assert w.exists() and j.exists()
    loaded = io.load(tmp_path / "run")  # a directory means DIR/model
    x = torch.randn(4, 3, dtype=torch.float64)
    assert torch.equal(loaded(x), model(x))
    assert loaded.metadata == {"rmse_ev": 0.1}
    assert json.loads(j.read_text())["entangle_version"]


def test_changed_bond_dimension_is_restored(tmp_path):
    model = Tiny(bond=2)
    model.core = torch.nn.Parameter(torch.randn(3, 5, dtype=torch.float64))  # grown by a sweep
    io.save(model, tmp_path / "m")
    loaded = io.load(tmp_path / "m.json")
    assert loaded.core.shape == (3, 5) and torch.equal(loaded.core, model.core)


def test_tampered_weights_are_refused(tmp_path):
    w, _ = io.save(Tiny(), tmp_path / "m")
    data = bytearray(w.read_bytes())
    data[-1] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="SHA-256"):
        io.load(tmp_path / "m")


def test_newer_format_is_refused(tmp_path):
    _, j = io.save(Tiny(), tmp_path / "m")
    header = json.loads(j.read_text())
    header["format_version"] = io.FORMAT_VERSION + 1
    j.write_text(json.dumps(header))
    with pytest.raises(ModelFileError, match="newer"):
        io.load(tmp_path / "m")


def test_unknown_class_missing_and_garbage_files(tmp_path):
    _, j = io.save(Tiny(), tmp_path / "m")
    header = json.loads(j.read_text())
    header["model_class"] = "os.system"
    j.write_text(json.dumps(header))
    with pytest.raises(ModelFileError, match="unknown model class"):
        io.load(tmp_path / "m")
    j.write_text("{not json")
    with pytest.raises(ModelFileError, match="JSON"):
        io.load(tmp_path / "m")
    with pytest.raises(ModelFileError, match="not found"):
        io.load(tmp_path / "absent")
    with pytest.raises(ModelFileError, match="not registered"):
        io.save(Unregistered(), tmp_path / "u")


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    io.atomic_write_bytes(target, b"old")

    def boom(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(io.os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        io.atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_writes_get_the_permissions_open_would_give(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    os.umask(mask)
    new = tmp_path / "new.json"
    io.atomic_write_text(new, "{}")
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    assert stat.S_IMODE(new.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~mask
    os.chmod(new, 0o640)
    io.atomic_write_text(new, "[]")  # a replaced file keeps its mode
    assert stat.S_IMODE(new.stat().st_mode) == 0o640 and new.read_text() == "[]"

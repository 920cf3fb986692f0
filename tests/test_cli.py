import subprocess
import sys

from entangle import __version__
from entangle.cli import main


def test_version_and_help(capsys):
    try:
        main(["--version"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert __version__ in capsys.readouterr().out
    assert main(["help"]) == 0
    out = capsys.readouterr().out
    for sub in ("demo", "fit", "evaluate", "predict", "describe", "vib", "analyze"):
        assert sub in out


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "entangle.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    missing_task = tmp_path / "a.yaml"
    missing_task.write_text("model: {}\n")
    assert main(["fit", str(missing_task), "--out", str(tmp_path / "out")]) == 2
    assert "task" in capsys.readouterr().err
    unknown = tmp_path / "b.yaml"
    unknown.write_text("task: alchemy\n")
    assert main(["fit", str(unknown), "--out", str(tmp_path / "out")]) == 2
    assert "unknown task 'alchemy'" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "absent.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    nnmpo = tmp_path / "c.yaml"
    nnmpo.write_text("task: nnmpo\n")
    assert main(["fit", str(nnmpo), "--out", str(tmp_path / "out"), "--device", "cuda"]) == 2
    assert "--device applies to the etn" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_evaluate_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "h2co:validation"]) == 2
    assert "not found" in capsys.readouterr().err

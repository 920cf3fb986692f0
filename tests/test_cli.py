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
    for sub in ("demo",):
        assert sub in out


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "entangle.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and __version__ in proc.stdout

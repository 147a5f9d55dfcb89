"""The import-linter layers contract (.importlinter) holds: CLI -> api -> engine -> rules -> kernels."""
import shutil
import subprocess
from pathlib import Path


def test_import_layers_contract():
    exe = shutil.which("lint-imports")
    assert exe, "import-linter is a test dependency: pip install -e '.[test]'"
    proc = subprocess.run([exe], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr

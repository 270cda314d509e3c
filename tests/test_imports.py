import subprocess
import sys


def test_rrm_imports_neither_gradio_nor_trl():
    code = ("import sys, rrm, rrm.judge, rrm.parse, rrm.prompts, rrm.media, rrm.model, rrm.testing, rrm.__main__, "
            "rrm.inputs, rrm.eval, rrm.eval.bon, rrm.eval.__main__, rrm.results, rrm.pairs; "
            "bad = [m for m in ('gradio', 'trl') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_rrm_does_not_load_torch():
    code = "import sys, rrm, rrm.parse, rrm.prompts, rrm.schema; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0

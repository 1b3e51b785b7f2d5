"""README.md stays true: its quick start runs, and every tool it names exists and starts."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_quickstart_block_runs_and_exports(tmp_path):
    match = re.search(r"<!-- readme-test: quickstart -->\n```python\n(.*?)```", README, re.S)
    assert match, "README lost its quick-start block"
    script = tmp_path / "quickstart.py"
    script.write_text(match.group(1))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # Twice in the same folder: a user re-runs the snippet (data, model file and export exist).
    for run in range(2):
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"run {run + 1}: {proc.stderr[-3000:]}"
        assert (tmp_path / "quickstart.keras").is_file()
        assert (tmp_path / "export" / "1" / "saved_model.pb").is_file()
        assert sorted(os.listdir(tmp_path / "export")) == ["1"]


def test_install_and_test_commands_are_what_ci_runs():
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    bash = _blocks("bash")
    install = next(b.strip() for b in bash if "pip install" in b)
    assert install in ci
    assert any(b.strip() == "python3 -m pytest" for b in bash)
    assert "\npython3 -m pytest\n" in ci


@pytest.mark.parametrize("tool", ["mnc-train", "mnc-eval", "mnc-predict", "mnc-export"])
def test_every_cli_named_in_the_readme_is_installed(tool):
    assert tool in README
    path = shutil.which(tool)
    assert path, f"{tool} is not on PATH: reinstall with the README's install command"
    proc = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage" in proc.stdout.lower(), proc.stderr[-2000:]


def test_every_file_the_readme_names_exists():
    for rel in re.findall(r"(?:examples|configs|benchmarks|docs|custom_ops)/[\w./-]+\.\w+", README):
        assert os.path.exists(os.path.join(ROOT, rel)), rel


_SAVE = """
import numpy as np, mnc_tf
m = mnc_tf.MNC(num_classes=2, backbone="tiny", num_stages=3, config=mnc_tf.MNCConfig.tiny_shapes())
x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
np.save("a.npy", m(x)["scores"].numpy())
m.save("m.keras")
"""
_LOAD = """
import numpy as np, mnc_tf
m = mnc_tf.load_model("m.keras")
x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
np.save("b.npy", m(x)["scores"].numpy())
"""


def test_load_model_in_a_fresh_process_after_plain_import(tmp_path):
    for code in (_SAVE, _LOAD):
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.shape == b.shape
    np.testing.assert_allclose(b, a, atol=1e-5)

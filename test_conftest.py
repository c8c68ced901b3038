"""conftest.py: how the suite starts, whatever the machine and the folder it is started from. Each test
starts pytest afresh (several seconds of imports), so they run with the slow tests."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def run_pytest(cwd, env_extra, *args):
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, **env_extra), timeout=300)


@pytest.mark.slow
def test_without_mnist_the_suite_says_so_in_one_line(tmp_path, offline_env):
    result = run_pytest(HERE, dict(offline_env, MNIST_DATA_DIR=str(tmp_path / "nothing")), "-q")
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 4 and len(lines) == 1, lines
    assert lines[0].startswith(f"ERROR: MNIST not found in '{tmp_path / 'nothing'}'") and "MNIST_DATA_DIR" in lines[0]
    assert not (tmp_path / "nothing").exists()


@pytest.mark.slow
def test_the_suite_runs_the_same_from_a_subfolder(data_dir):
    """From augmented_samples/, `pytest` collects what it collects at the root, with the same MNIST."""
    env = {"MNIST_DATA_DIR": data_dir}
    at_root, below = (run_pytest(cwd, env, "--collect-only", "-q")
                      for cwd in (HERE, os.path.join(HERE, "augmented_samples")))
    assert below.returncode == at_root.returncode == 0, below.stdout[-2000:] + below.stderr[-2000:]
    tests = [line for line in at_root.stdout.splitlines() if "::" in line]
    assert len(tests) > 100 and [line for line in below.stdout.splitlines() if "::" in line] == tests

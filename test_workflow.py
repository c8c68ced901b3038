"""The GitHub workflow: GitHub's schema, zizmor's audit, and that every step names real files and flags.

These checks need the extras (pip install -r requirements-extras.txt); without them they are skipped
with the reason. CI installs both files, so there they all run.
"""
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WORKFLOW = os.path.join(HERE, ".github", "workflows", "ml-pipeline.yml")
ZIZMOR_CONFIG = os.path.join(HERE, ".github", "zizmor.yml")
BIN = os.path.dirname(sys.executable)  # the tools installed beside this Python


def tool(name):
    path = shutil.which(name, path=BIN) or shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed: pip install -r requirements-extras.txt")
    return path


@pytest.fixture(scope="module")
def job():
    yaml = pytest.importorskip("yaml", reason="pip install -r requirements-extras.txt")
    with open(WORKFLOW) as f:
        workflow = yaml.safe_load(f)
    assert set(workflow) == {"name", True, "permissions", "concurrency", "jobs"}  # PyYAML reads `on:` as True
    assert set(workflow[True]) == {"push", "pull_request", "workflow_dispatch"}
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["cancel-in-progress"] is True
    (the_job,) = workflow["jobs"].values()
    return the_job


def test_workflow_matches_github_schema():
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", WORKFLOW],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_passes_zizmor_offline():
    result = subprocess.run([tool("zizmor"), "--offline", "--config", ZIZMOR_CONFIG, WORKFLOW],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings" in result.stdout + result.stderr


def test_zizmor_policy_rejects_an_unpinned_action(tmp_path):
    """The audit is not vacuous: the same workflow with one action on a tag fails it."""
    unpinned = tmp_path / "ml-pipeline.yml"
    text = open(WORKFLOW).read()
    unpinned.write_text(re.sub(r"actions/checkout@[0-9a-f]{40}", "actions/checkout@v4", text))
    result = subprocess.run([tool("zizmor"), "--offline", "--config", ZIZMOR_CONFIG, str(unpinned)],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "unpinned-uses" in result.stdout + result.stderr


def test_workflow_actions_pinned_and_versioned(job):
    uses = [s["uses"] for s in job["steps"] if "uses" in s]
    assert [u.split("@")[0] for u in uses] == ["actions/checkout", "actions/setup-python", "actions/cache",
                                               "actions/upload-artifact"]
    assert all(re.fullmatch(r"[\w/-]+@[0-9a-f]{40}", u) for u in uses)
    text = open(WORKFLOW).read()
    for action, major in (("checkout", "v4"), ("setup-python", "v5"), ("cache", "v4"), ("upload-artifact", "v4")):
        assert re.search(rf"actions/{action}@[0-9a-f]{{40}} # {major}\.", text), action


def test_workflow_python_and_caches(job):
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"] == {"python-version": "3.11", "cache": "pip", "cache-dependency-path": "requirements.txt"}
    cache = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == job["env"]["MNIST_DATA_DIR"]
    readme = open(os.path.join(HERE, "README.md")).read()
    assert "Python 3.11" in readme


def test_workflow_installs_cpu_torch_then_requirements(job):
    install = next(s["run"] for s in job["steps"] if "download.pytorch.org" in s.get("run", ""))
    lines = [line.strip() for line in install.splitlines()]
    cpu = next(i for i, line in enumerate(lines) if "--index-url https://download.pytorch.org/whl/cpu" in line)
    rest = next(i for i, line in enumerate(lines) if line.startswith("pip install -r requirements.txt"))
    assert cpu < rest and "-c cpu-constraints.txt" in lines[rest]
    pinned = {line.split("==")[0] for line in open(os.path.join(HERE, "requirements.txt")) if "==" in line}
    assert {"torch", "torchvision"} <= pinned  # the grep in the install step finds both


def commands(script):
    """(program, [flags]) for each `python X.py ...` and `pytest ...` line of a run: script."""
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["python"] and words[1:2] and words[1].endswith(".py"):
            found.append((words[1], [w.split("=")[0] for w in words[2:] if w.startswith("--")]))
        elif words[:1] == ["pytest"]:
            found.append(("pytest", [w.split("=")[0] for w in words[1:] if w.startswith("--")]))
    return found


def help_text(program):
    cmd = [sys.executable, "-m", "pytest", "--help"] if program == "pytest" else [sys.executable, program, "--help"]
    result = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_workflow_run_steps_use_real_files_and_flags(job):
    checked = []
    for step in job["steps"]:
        for program, flags in commands(step.get("run", "")):
            if program != "pytest":
                assert os.path.isfile(os.path.join(HERE, program)), f"{step['name']}: no {program}"
            options = set(re.findall(r"--[\w-]+", help_text(program)))
            for flag in flags:
                assert flag in options, f"{step['name']}: {program} has no {flag}"
            checked.append(program)
    assert checked == ["train.py", "pytest"]


def test_flag_check_catches_a_wrong_flag():
    (program, flags), = commands('python train.py --no-such-flag "$OUT_DIR"')
    assert "--no-such-flag" not in set(re.findall(r"--[\w-]+", help_text(program)))


def test_artifact_globs_match_a_real_training_run(job, trained):
    """Each upload path matches what `python train.py --out-dir artifacts` wrote (the session's
    training run used exactly that command, into a temporary folder), so a rename cannot empty it."""
    if trained.out_dir is None:
        pytest.skip("testing a given --checkpoint: no training run of this session to compare against")
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["retention-days"] == 90 and upload["with"]["if-no-files-found"] == "error"
    out_var = job["env"]["OUT_DIR"]
    train_cmd = next(s["run"] for s in job["steps"] if "train.py" in s.get("run", ""))
    test_cmd = next(s["run"] for s in job["steps"] if "pytest" in s.get("run", ""))
    assert train_cmd.strip() == 'python train.py --out-dir "$OUT_DIR"'
    assert '--junit-xml="$OUT_DIR/junit.xml"' in test_cmd
    for pattern in upload["with"]["path"].split():
        assert pattern.startswith(out_var + "/")
        relative = os.path.relpath(pattern, out_var)
        if relative == "junit.xml":
            continue  # written by the test step, checked above
        assert glob.glob(os.path.join(trained.out_dir, relative)), f"{pattern} matches nothing train.py wrote"


@pytest.mark.slow
def test_workflow_steps_run_locally():
    pytest.importorskip("yaml", reason="pip install -r requirements-extras.txt")
    result = subprocess.run([sys.executable, os.path.join(HERE, ".ci", "workflow_local.py")], cwd=HERE,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "workflow steps passed locally" in result.stdout
    assert "### MNIST model" in result.stdout



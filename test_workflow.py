"""The GitHub workflow: GitHub's schema, zizmor's audit, and that every step names real files and flags.

These checks need the extras (pip install -r requirements-extras.txt); without them they are skipped
with the reason. CI installs both files, so there they all run.
"""
import glob
import importlib
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


DEPENDABOT = os.path.join(HERE, ".github", "dependabot.yml")
# The current release of each action, all on Node 24, verified tag -> commit in the actions' repositories.
ACTIONS = {"actions/checkout": ("3d3c42e5aac5ba805825da76410c181273ba90b1", "v7.0.1"),
           "actions/setup-python": ("5fda3b95a4ea91299a34e894583c3862153e4b97", "v7.0.0"),
           "actions/cache": ("27d5ce7f107fe9357f9df03efb73ab90386fccae", "v5.0.5"),
           "actions/upload-artifact": ("bbbca2ddaa5d8feaa63e36b76fdaad77386f024f", "v7.0.0")}


def load_yaml(path):
    yaml = pytest.importorskip("yaml", reason="pip install -r requirements-extras.txt")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def jobs():
    workflow = load_yaml(WORKFLOW)
    assert set(workflow) == {"name", True, "permissions", "concurrency", "jobs"}  # PyYAML reads `on:` as True
    assert set(workflow[True]) == {"push", "pull_request", "workflow_dispatch"}
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert set(workflow["jobs"]) == {"train-and-test", "portability"}
    return workflow["jobs"]


@pytest.fixture(scope="module")
def job(jobs):
    """The job that trains, tests and publishes the checkpoint."""
    return jobs["train-and-test"]


@pytest.fixture(scope="module")
def matrix_job(jobs):
    return jobs["portability"]


def readme():
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_workflow_matches_github_schema():
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", WORKFLOW],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_and_dependabot_pass_zizmor_offline():
    result = subprocess.run([tool("zizmor"), "--offline", "--config", ZIZMOR_CONFIG, os.path.join(HERE, ".github")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings" in result.stdout + result.stderr


def test_zizmor_policy_rejects_an_unpinned_action(tmp_path):
    """The audit is not vacuous: the same workflow with one action on a tag fails it."""
    unpinned = tmp_path / "ml-pipeline.yml"
    text = open(WORKFLOW, encoding="utf-8").read()
    unpinned.write_text(re.sub(r"actions/checkout@[0-9a-f]{40}", "actions/checkout@v4", text))
    result = subprocess.run([tool("zizmor"), "--offline", "--config", ZIZMOR_CONFIG, str(unpinned)],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "unpinned-uses" in result.stdout + result.stderr


def test_workflow_actions_pinned_and_versioned(job, matrix_job):
    uses = [s["uses"] for s in job["steps"] if "uses" in s]
    assert [u.split("@")[0] for u in uses] == ["actions/checkout", "actions/setup-python", "actions/cache",
                                               "actions/upload-artifact"]
    assert [u.split("@")[0] for u in (s.get("uses") for s in matrix_job["steps"]) if u] == \
        ["actions/checkout", "actions/setup-python", "actions/cache"]
    with open(WORKFLOW, encoding="utf-8") as f:
        pins = re.findall(r"uses: ([\w/-]+)@(\S+) # (\S+)", f.read())
    assert len(pins) == 7
    for action, sha, version in pins:
        assert (sha, version) == ACTIONS[action], action


def test_workflow_keeps_credentials_out_of_the_checkout(jobs):
    for the_job in jobs.values():
        checkout = next(s for s in the_job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
        assert checkout["with"] == {"persist-credentials": False}


def test_matrix_job_backs_the_os_claim(matrix_job):
    """Each OS installs as the README's quick start says for it, trains one epoch and runs pytest, in bash."""
    assert matrix_job["strategy"]["matrix"]["os"] == ["ubuntu-latest", "macos-latest", "windows-latest"]
    assert matrix_job["strategy"]["fail-fast"] is False and matrix_job["runs-on"] == "${{ matrix.os }}"
    assert matrix_job["defaults"]["run"]["shell"] == "bash"
    setup = next(s for s in matrix_job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["python-version"] == "3.11"
    runs = [s["run"] for s in matrix_job["steps"] if "run" in s]
    install = [line.strip() for line in runs[0].splitlines()]
    assert install.index(cpu_only_install()) < install.index("pip install -r requirements.txt")
    assert 'if [ "$RUNNER_OS" = Linux ]; then' in install
    assert [program for program, _ in commands("\n".join(runs[1:]))] == ["train.py", "pytest"]
    assert "configured" in readme() and "not yet" in readme()  # no claim that it passed before it has


def cpu_only_install():
    """The README's CPU-only torch line, which must pin what requirements.txt pins."""
    (line,) = {m.strip() for m in re.findall(r"^ *(pip install torch==.*whl/cpu)$", readme(), re.M)}
    with open(os.path.join(HERE, "requirements.txt"), encoding="utf-8") as f:
        pins = dict(line.strip().split("==") for line in f if re.match(r"torch(vision)?==", line))
    assert line == (f"pip install torch=={pins['torch']} torchvision=={pins['torchvision']} "
                    "--index-url https://download.pytorch.org/whl/cpu")
    return line


def test_dependabot_config_matches_schema():
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", DEPENDABOT],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dependabot_schema_check_rejects_a_bad_config(tmp_path):
    """The schema check is not vacuous: an interval Dependabot does not know fails it."""
    bad = tmp_path / "dependabot.yml"
    with open(DEPENDABOT, encoding="utf-8") as f:
        bad.write_text(f.read().replace("interval: weekly", "interval: fortnightly", 1), encoding="utf-8")
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode != 0


def test_dependabot_updates_actions_and_pip_weekly_grouped():
    updates = load_yaml(DEPENDABOT)["updates"]
    assert sorted(u["package-ecosystem"] for u in updates) == ["github-actions", "pip"]
    for update in updates:
        assert update["schedule"]["interval"] == "weekly" and update["directory"] == "/"
        assert 3 <= update["cooldown"]["default-days"] <= 14
        (group,) = update["groups"].values()
        assert group["patterns"] == ["*"]  # one pull request per ecosystem


def test_workflow_python_and_caches(job):
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"] == {"python-version": "3.11", "cache": "pip", "cache-dependency-path": "requirements.txt"}
    cache = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == job["env"]["MNIST_DATA_DIR"]
    assert "Python 3.11" in readme()


def test_workflow_installs_cpu_torch_then_requirements(job):
    install = next(s["run"] for s in job["steps"] if "download.pytorch.org" in s.get("run", ""))
    lines = [line.strip() for line in install.splitlines()]
    cpu = next(i for i, line in enumerate(lines) if "--index-url https://download.pytorch.org/whl/cpu" in line)
    rest = next(i for i, line in enumerate(lines) if line.startswith("pip install -r requirements.txt"))
    assert cpu < rest and "-c cpu-constraints.txt" in lines[rest]
    pinned = {line.split("==")[0] for line in open(os.path.join(HERE, "requirements.txt"), encoding="utf-8") if "==" in line}
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
    """What `program --help` prints: a script's own parser, or pytest's (run once, it is slow)."""
    if program != "pytest":
        return importlib.import_module(program[:-3]).build_parser().format_help()
    result = subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=HERE, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("name, programs", [("train-and-test", ["train.py", "pytest"]),
                                            ("portability", ["train.py", "pytest"])])
def test_workflow_run_steps_use_real_files_and_flags(jobs, name, programs):
    checked = []
    for step in jobs[name]["steps"]:
        for program, flags in commands(step.get("run", "")):
            if program != "pytest":
                assert os.path.isfile(os.path.join(HERE, program)), f"{step['name']}: no {program}"
            options = set(re.findall(r"--[\w-]+", help_text(program)))
            for flag in flags:
                assert flag in options, f"{step['name']}: {program} has no {flag}"
            checked.append(program)
    assert checked == programs


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



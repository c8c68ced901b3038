"""The GitHub workflows (ml-pipeline.yml, release.yml): GitHub's schema, zizmor's audit, pinned actions, and
that every step names real files and flags.

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
RELEASE = os.path.join(HERE, ".github", "workflows", "release.yml")
ZIZMOR_CONFIG = os.path.join(HERE, ".github", "zizmor.yml")
BIN = os.path.dirname(sys.executable)  # the tools installed beside this Python


def tool(name):
    path = shutil.which(name, path=BIN) or shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed: pip install -r requirements-extras.txt")
    return path


DEPENDABOT = os.path.join(HERE, ".github", "dependabot.yml")


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
def release_job():
    """release.yml's one job: on a tag v* only, the one place with write access, and no cache."""
    workflow = load_yaml(RELEASE)
    assert workflow[True] == {"push": {"tags": ["v*"]}}
    assert workflow["permissions"] == {"contents": "read"}
    (job,) = workflow["jobs"].values()
    assert job["permissions"] == {"contents": "write"}
    return job


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


@pytest.mark.parametrize("path", [WORKFLOW, RELEASE], ids=os.path.basename)
def test_workflow_matches_github_schema(path):
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", path],
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


def test_workflow_actions_pinned_and_versioned(job, matrix_job, release_job):
    """Every action is pinned to a full commit SHA with its version in a comment, and an action has the
    same pin wherever it is used: whatever the pins are today, so that a Dependabot bump passes as it is."""
    uses = [s["uses"] for s in job["steps"] if "uses" in s]
    assert [u.split("@")[0] for u in uses] == ["actions/checkout", "actions/setup-python", "actions/cache",
                                               "actions/upload-artifact"]
    assert [u.split("@")[0] for u in (s.get("uses") for s in matrix_job["steps"]) if u] == \
        ["actions/checkout", "actions/setup-python", "actions/cache"]
    assert [s["uses"].split("@")[0] for s in release_job["steps"] if "uses" in s] == \
        ["actions/checkout", "actions/setup-python"]
    lines = [line for path in (WORKFLOW, RELEASE) for line in open(path, encoding="utf-8") if "uses:" in line]
    pins = [re.fullmatch(r"\s*(?:- )?uses: ([\w/-]+)@([0-9a-f]{40}) # (v\d+(?:\.\d+)*)\n", line) for line in lines]
    assert all(pins) and len(pins) == 9, [line for line, pin in zip(lines, pins, strict=True) if not pin]
    pinned = {}
    for action, sha, version in (p.groups() for p in pins):
        assert pinned.setdefault(action, (sha, version)) == (sha, version), f"{action} pinned two ways"


def test_pin_check_catches_an_unversioned_pin(tmp_path):
    """The pattern the pins are held to refuses a SHA without its version comment and a short SHA."""
    pattern = r"\s*(?:- )?uses: ([\w/-]+)@([0-9a-f]{40}) # (v\d+(?:\.\d+)*)\n"
    good = "      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1\n"
    assert re.fullmatch(pattern, good)
    assert not re.fullmatch(pattern, good.replace(" # v7.0.1", ""))
    assert not re.fullmatch(pattern, good.replace("3d3c42e5aac5ba805825da76410c181273ba90b1", "3d3c42e"))


def test_workflow_keeps_credentials_out_of_the_checkout(jobs, release_job):
    for the_job in [*jobs.values(), release_job]:
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
    with open(os.path.join(HERE, "requirements.txt"), encoding="utf-8") as f:
        pinned = {line.split("==")[0] for line in f if "==" in line}
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
    """What a script's `--help` prints."""
    return importlib.import_module(program[:-3]).build_parser().format_help()


def takes_flag(program, flag, pytestconfig):
    """Whether `program` accepts `flag`: a script's parser, or this pytest (plugins and conftest.py included)."""
    if program != "pytest":
        return flag in set(re.findall(r"--[\w-]+", help_text(program)))
    try:
        pytestconfig.getoption(flag)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("name, programs", [
    ("train-and-test", ["train.py", "pytest"]),
    ("portability", ["train.py", "pytest"]),
    ("release", ["train.py", "pytest", "export.py", "release.py"]),
])
def test_workflow_run_steps_use_real_files_and_flags(jobs, release_job, name, programs, pytestconfig):
    checked = []
    for step in (release_job if name == "release" else jobs[name])["steps"]:
        for program, flags in commands(step.get("run", "")):
            if program != "pytest":
                assert os.path.isfile(os.path.join(HERE, program)), f"{step['name']}: no {program}"
            for flag in flags:
                assert takes_flag(program, flag, pytestconfig), f"{step['name']}: {program} has no {flag}"
            checked.append(program)
    assert checked == programs


def test_release_job_uses_no_cache_and_publishes_what_release_py_stages(release_job):
    """No cache feeds a release (zizmor's cache-poisoning audit), and `gh` publishes the folder that
    release.py writes, with its notes, from the tag that triggered the run."""
    setup = next(s for s in release_job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert "cache" not in setup["with"]
    runs = [s["run"] for s in release_job["steps"] if "run" in s]
    stage = next(r for r in runs if "release.py" in r)
    assert "--out release" in stage and '--repo "$GITHUB_REPOSITORY"' in stage
    publish = runs[-1]
    assert publish.startswith('gh release create "$GITHUB_REF_NAME" release/*.pth release/*.json release/*.onnx')
    assert "--notes-file release/notes.md" in publish and "${{" not in publish  # no expression in a script
    assert next(s for s in release_job["steps"] if "gh release" in s.get("run", ""))["env"] == \
        {"GH_TOKEN": "${{ github.token }}"}


def test_flag_check_catches_a_wrong_flag(pytestconfig):
    for line in ('python train.py --no-such-flag "$OUT_DIR"', "pytest --no-such-flag"):
        (program, flags), = commands(line)
        assert flags == ["--no-such-flag"] and not takes_flag(program, flags[0], pytestconfig)
    assert takes_flag("pytest", "--junit-xml", pytestconfig) and takes_flag("pytest", "--checkpoint", pytestconfig)


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

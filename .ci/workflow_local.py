"""Run a GitHub workflow job's `run:` steps here, in order, as the runner would, and check what it leaves.

    python .ci/workflow_local.py            # ml-pipeline.yml's train-and-test job: train, test, the artifact
    python .ci/workflow_local.py release    # release.yml's job: every variant, up to what it would publish

GitHub Actions cannot run on this machine, so this exercises the pipelines' own commands end to end, in a
copy of the repository's tracked files: `uses:` steps are skipped (checkout, setup-python, cache, upload),
the install step becomes the local install (requirements*.txt already installed) into the Python running
this script, whose `python` and `pytest` the steps then run; MNIST_DATA_DIR points at the local copy, and
each step runs under `bash -eo pipefail` as on the runner. `gh release create` is not run: a stand-in
checks that every file it names exists. Afterwards the train-and-test job's every upload-artifact path must
match a file and its job summary must be written; the release job's folder must hold each variant's
stable-named files and the notes.
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_INSTALL = "pip install -r requirements.txt"  # what the CPU-index install step becomes here
# `gh release create TAG FILES... --flags`: each file named must exist; what would be published is printed.
GH_STAND_IN = ('gh() { for f in "$@"; do case "$f" in release/*) [ -e "$f" ] || { echo "gh: no file $f" >&2; '
               'return 1; };; esac; done; echo "would run: gh $*"; }\n')
JOBS = {"train-and-test": "ml-pipeline.yml", "release": "release.yml"}


def load_job(name="train-and-test"):
    with open(os.path.join(ROOT, ".github", "workflows", JOBS[name]), encoding="utf-8") as f:
        return yaml.safe_load(f)["jobs"][name]  # the portability matrix runs train-and-test's commands per OS


def local_command(step):
    """The step's shell script as it runs here."""
    script = step["run"]
    if "download.pytorch.org" in script:
        return LOCAL_INSTALL
    return GH_STAND_IN + script if script.lstrip().startswith("gh ") else script


def copy_of_repo(dest):
    """The tracked files (as a fresh checkout has them) in `dest`, so that a job's outputs land there."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    for path in filter(None, tracked.stdout.split("\0")):
        if os.path.isfile(os.path.join(ROOT, path)):
            os.makedirs(os.path.join(dest, os.path.dirname(path)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, path), os.path.join(dest, path))


def check_artifact(job, repo, tmp):
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    missing = []
    for pattern in upload["with"]["path"].split():
        # The workflow writes under $OUT_DIR (artifacts/ on the runner); here that is a temp folder.
        local = os.path.join(tmp, "artifacts", os.path.relpath(pattern, job["env"]["OUT_DIR"]))
        matches = glob.glob(local)
        print(f"artifact {pattern}: {len(matches)} file(s)")
        if not matches:
            missing.append(pattern)
    if missing:
        sys.exit(f"artifact patterns with no file: {', '.join(missing)}")
    with open(os.path.join(tmp, "step_summary.md"), encoding="utf-8") as f:
        print(f.read())


def check_release(job, repo, tmp):
    import hubconf  # ROOT's, imported by main
    from model import MODELS

    stems = [hubconf.RELEASE_STEM.format(model=m) for m in MODELS]
    wanted = [s + ext for s in stems for ext in (".pth", ".json", ".onnx")] + ["notes.md"]
    missing = [f for f in wanted if not os.path.isfile(os.path.join(repo, "release", f))]
    if missing:
        sys.exit(f"release files missing: {', '.join(missing)}")
    with open(os.path.join(repo, "release", "notes.md"), encoding="utf-8") as f:
        print(f.read())


def main(name="train-and-test"):
    job = load_job(name)
    with tempfile.TemporaryDirectory() as tmp:
        repo = os.path.join(tmp, "repo")
        copy_of_repo(repo)
        sys.path.insert(0, ROOT)
        import hubconf

        env = dict(os.environ, **{k: str(v) for k, v in job.get("env", {}).items()})
        env.update(OUT_DIR=os.path.join(tmp, "artifacts"), GITHUB_STEP_SUMMARY=os.path.join(tmp, "step_summary.md"),
                   MNIST_DATA_DIR=os.path.abspath(os.environ.get("MNIST_DATA_DIR", os.path.join(ROOT, "data"))),
                   GITHUB_REPOSITORY=hubconf.GITHUB_REPO, GITHUB_REF_NAME="v0.0.0-local",
                   PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))  # its python
        for step in job["steps"]:
            if "uses" in step:
                print(f"--- skip {step['uses'].split('@')[0]} (a GitHub action)", flush=True)
                continue
            print(f"--- run: {step['name']}", flush=True)
            result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", local_command(step)],
                                    cwd=repo, env=env)
            if result.returncode != 0:
                sys.exit(f"step {step['name']!r} failed with exit code {result.returncode}")
        (check_artifact if name == "train-and-test" else check_release)(job, repo, tmp)
    print("workflow steps passed locally")


if __name__ == "__main__":
    main(*sys.argv[1:2])

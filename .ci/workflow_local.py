"""Run the GitHub workflow's `run:` steps here, in order, as the runner would, and check its artifact.

    python .ci/workflow_local.py            # from the repository root, with requirements*.txt installed

GitHub Actions cannot run on this machine, so this exercises the pipeline's own commands end to end:
`uses:` steps are skipped (checkout, setup-python, cache, upload), the install step's PyTorch CPU index
is swapped for the local install, MNIST_DATA_DIR points at the local copy, and each step runs under
`bash -eo pipefail` as on the runner. Afterwards every upload-artifact path pattern must match a file,
and the job summary must have been written.
"""
import glob
import os
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOW = os.path.join(ROOT, ".github", "workflows", "ml-pipeline.yml")
LOCAL_INSTALL = "pip install -r requirements.txt"  # what the CPU-index install step becomes here


def load_job(path=WORKFLOW):
    with open(path, encoding="utf-8") as f:
        workflow = yaml.safe_load(f)
    return workflow["jobs"]["train-and-test"]  # the portability matrix runs the same commands per OS


def local_command(step):
    """The step's shell script as it runs here."""
    script = step["run"]
    return LOCAL_INSTALL if "download.pytorch.org" in script else script


def main():
    job = load_job()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = os.path.join(tmp, "artifacts")
        summary = os.path.join(tmp, "step_summary.md")
        env = dict(os.environ, **{k: str(v) for k, v in job.get("env", {}).items()})
        env.update(OUT_DIR=out_dir, GITHUB_STEP_SUMMARY=summary,
                   MNIST_DATA_DIR=os.environ.get("MNIST_DATA_DIR", env["MNIST_DATA_DIR"]))
        upload = None
        for step in job["steps"]:
            if "uses" in step:
                print(f"--- skip {step['uses'].split('@')[0]} (a GitHub action)", flush=True)
                if step["uses"].startswith("actions/upload-artifact@"):
                    upload = step
                continue
            print(f"--- run: {step['name']}", flush=True)
            result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", local_command(step)],
                                    cwd=ROOT, env=env)
            if result.returncode != 0:
                sys.exit(f"step {step['name']!r} failed with exit code {result.returncode}")

        missing = []
        for pattern in upload["with"]["path"].split():
            # The workflow writes under $OUT_DIR (artifacts/ on the runner); here that is a temp folder.
            local = os.path.join(out_dir, os.path.relpath(pattern, job["env"]["OUT_DIR"]))
            matches = glob.glob(local)
            print(f"artifact {pattern}: {len(matches)} file(s)")
            if not matches:
                missing.append(pattern)
        if missing:
            sys.exit(f"artifact patterns with no file: {', '.join(missing)}")
        with open(summary, encoding="utf-8") as f:
            print(f.read())
    print("workflow steps passed locally")


if __name__ == "__main__":
    main()

"""The scripts around the model: the GitHub workflow, predict.py, export.py and benchmark.py.

The workflow and export checks need the extras (pip install -r requirements-extras.txt); without
them those tests are skipped with the reason. CI installs both files, so there they all run.
"""
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import torch

import export
import predict
import train
from model import build_model
from test_model import assert_one_line_error, run_in_process, run_script

HERE = os.path.dirname(os.path.abspath(__file__))
WORKFLOW = os.path.join(HERE, ".github", "workflows", "ml-pipeline.yml")
ZIZMOR_CONFIG = os.path.join(HERE, ".github", "zizmor.yml")
BIN = os.path.dirname(sys.executable)  # the tools installed beside this Python


def tool(name):
    path = shutil.which(name, path=BIN) or shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed: pip install -r requirements-extras.txt")
    return path


# ---------------------------------------------------------------- the GitHub workflow

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


# ---------------------------------------------------------------- predict.py

def as_photo(image_uint8, path, size=(180, 240), mode="RGB"):
    """Save an MNIST digit the way people have them: dark ink on light paper, larger, in colour."""
    from PIL import Image

    paper = (255 - image_uint8[0]).numpy()
    Image.fromarray(paper).resize(size, Image.BILINEAR).convert(mode).save(path)
    return path


def test_preprocessing_reproduces_mnist_framing(mnist_test):
    """An MNIST digit run through to_mnist comes back where it was: 20x20 box, centred by mass."""
    image = train.to_unit(mnist_test[0][0, 0])
    out = predict.to_mnist(image)[0].float() / 255
    rows, cols = out.sum(1).nonzero().flatten(), out.sum(0).nonzero().flatten()
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 20
    ys = torch.arange(28.0)
    com = ((out.sum(1) * ys).sum() / out.sum(), (out.sum(0) * ys).sum() / out.sum())
    assert abs(com[0] - 14) <= 1 and abs(com[1] - 14) <= 1


def test_photos_of_digits_are_classified(trained, mnist_test, tmp_path):
    """200 test digits saved as dark-on-light RGB/JPEG/grayscale images of other sizes: the full
    predict path (load, invert, crop, rescale, centre) keeps accuracy high."""
    images, labels = mnist_test
    formats = [("RGB", ".png", (180, 240)), ("L", ".jpg", (90, 90)), ("RGBA", ".png", (56, 64))]
    prepared = []
    for i in range(200):
        mode, ext, size = formats[i % 3]
        path = as_photo(images[i], tmp_path / f"digit{i}{ext}", size, mode)
        prepared.append(predict.to_mnist(predict.load_image(str(path))))
    acc = 100 * (predict.classify(trained.model, torch.stack(prepared)).argmax(1) == labels[:200]).float().mean()
    print(f"accuracy on 200 re-photographed test digits: {acc:.1f}%")
    assert acc >= 97.0


def test_transparent_drawing_is_read_as_ink_on_paper(tmp_path):
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    ImageDraw.Draw(img).line([(50, 15), (50, 85)], fill=(0, 0, 0, 255), width=8)
    img.save(tmp_path / "one.png")
    out = predict.to_mnist(predict.load_image(str(tmp_path / "one.png")))
    assert out.max() == 255 and out[0, :, :3].sum() == 0  # white stroke, black margins


def test_predict_cli_prints_one_line_per_image(trained, mnist_test, tmp_path):
    paths = [as_photo(mnist_test[0][i], tmp_path / f"d{i}.png") for i in range(3)]
    result = run_script("predict.py", trained.pth, *paths, "--top", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    for line, path, label in zip(lines, paths, mnist_test[1][:3]):
        assert re.fullmatch(rf"{re.escape(str(path))}: \d \(\d+\.\d%\), \d \(\d+\.\d%\), \d \(\d+\.\d%\)", line)
        assert line.split(": ")[1].startswith(f"{int(label)} (")


def test_predict_without_sidecar_takes_model_flag(trained, mnist_test, tmp_path):
    pth = tmp_path / "bare.pth"
    shutil.copy(trained.pth, pth)
    path = as_photo(mnist_test[0][0], tmp_path / "d.png")
    assert_one_line_error(run_script("predict.py", pth, path), "pass --model NAME")
    result = run_script("predict.py", pth, path, "--model", trained.sidecar["model"])
    assert result.returncode == 0 and result.stdout.startswith(f"{path}: {int(mnist_test[1][0])} (")


def test_predict_evaluate(trained, tmp_path, data_dir):
    result = run_script("predict.py", trained.pth, "--evaluate", "--out-dir", tmp_path, "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    acc = float(re.search(r"test accuracy: ([\d.]+)%", result.stdout).group(1))
    assert acc == pytest.approx(trained.sidecar["test_acc"], abs=0.01)
    assert len(re.findall(r"\d: [\d.]+%", result.stdout.split("per class:")[1].splitlines()[0])) == 10
    matrix = [line.split() for line in result.stdout.split("predicted):")[1].strip().splitlines()[1:11]]
    assert sum(int(c) for row in matrix for c in row[1:]) == 10_000
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_output_into_a_closed_pipe_is_quiet(trained, tmp_path, data_dir):
    """`predict.py --evaluate | head -2`: when the reader has gone, exit 141 without a traceback."""
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "predict.py"), trained.pth, "--evaluate",
                             "--out-dir", str(tmp_path), "--data-dir", data_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader goes away before the first line is written
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode == 141, stderr
    assert stderr == ""


def corrupt_copies(trained, tmp_path):
    """(name, checkpoint path, extra flags, expected message) for each broken checkpoint a user may hold."""
    stem = os.path.basename(trained.pth)[:-4]
    cases = []
    truncated = tmp_path / "truncated" / (stem + ".pth")
    truncated.parent.mkdir()
    truncated.write_bytes(open(trained.pth, "rb").read()[:2000])
    cases.append(("truncated", truncated, ["--model", trained.sidecar["model"]], "not a readable PyTorch checkpoint"))
    tampered = tmp_path / "tampered" / (stem + ".pth")
    tampered.parent.mkdir()
    data = bytearray(open(trained.pth, "rb").read())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    shutil.copy(trained.pth[:-4] + ".json", tampered.parent)
    cases.append(("sha256 mismatch", tampered, [], "does not match the sha256"))
    other = "tinynet" if trained.sidecar["model"] != "tinynet" else "fastnet"
    wrong = tmp_path / "other_variant" / "m.pth"
    wrong.parent.mkdir()
    torch.save(build_model(other).state_dict(), wrong)
    (wrong.parent / "m.json").write_text(json.dumps({"model": trained.sidecar["model"]}))
    cases.append(("another variant", wrong, [], "another variant?"))
    cases.append(("missing", tmp_path / "nowhere.pth", [], "not found"))
    return cases


def test_predict_refuses_bad_checkpoints(trained, mnist_test, tmp_path, capsys):
    image = as_photo(mnist_test[0][0], tmp_path / "d.png")
    for name, pth, flags, needle in corrupt_copies(trained, tmp_path):
        assert_one_line_error(run_in_process(predict.main, [pth, image, *flags], capsys), needle)


def test_predict_refuses_bad_images(trained, mnist_test, tmp_path, capsys):
    from PIL import Image

    good = as_photo(mnist_test[0][0], tmp_path / "good.png")
    (tmp_path / "notes.png").write_text("not an image")
    Image.new("RGB", (64, 64), "white").save(tmp_path / "white.png")
    Image.new("L", (64, 64), 0).save(tmp_path / "black.png")
    (tmp_path / "empty.png").write_bytes(b"")
    for bad, needle in (("notes.png", "is not a readable PNG/JPEG image"), ("white.png", "no digit found"),
                        ("black.png", "no digit found"), ("empty.png", "is not a readable PNG/JPEG image"),
                        ("missing.png", "not found")):
        # the good image first: nothing is printed for it when a later one is bad
        assert_one_line_error(run_in_process(predict.main, [trained.pth, good, tmp_path / bad], capsys), needle)


# ---------------------------------------------------------------- export.py

@pytest.fixture(scope="module")
def onnxruntime():
    pytest.importorskip("onnx", reason="pip install -r requirements-extras.txt")
    return pytest.importorskip("onnxruntime", reason="pip install -r requirements-extras.txt")


def test_export_onnx_matches_pytorch(onnxruntime, trained, mnist_test, tmp_path, data_dir):
    out = tmp_path / "model.onnx"
    result = run_script("export.py", trained.pth, "--out", out, "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    assert "max |onnxruntime - pytorch|" in result.stdout
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = train.normalize(train.to_unit(mnist_test[0][:257]))  # a batch size the export never saw
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    with torch.no_grad():
        expected = trained.model(x)
    assert got.shape == (257, 10)
    assert (got - expected).abs().max() <= 1e-4


@pytest.mark.slow
def test_export_int8_keeps_accuracy(onnxruntime, trained, tmp_path, data_dir):
    out = tmp_path / "model.onnx"
    result = run_script("export.py", trained.pth, "--out", out, "--int8", "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    int8 = tmp_path / "model.int8.onnx"
    assert int8.stat().st_size < 0.6 * out.stat().st_size
    accs = re.search(r"accuracy ([\d.]+)% vs float ([\d.]+)%", result.stdout)
    int8_acc, float_acc = float(accs.group(1)), float(accs.group(2))
    print(result.stdout)
    assert float_acc - int8_acc <= 0.2


def test_export_refuses_bad_checkpoints(onnxruntime, trained, tmp_path, capsys):
    for name, pth, flags, needle in corrupt_copies(trained, tmp_path):
        assert_one_line_error(run_in_process(export.main, [pth, *flags], capsys), needle)
        assert not glob.glob(str(tmp_path / "**" / "*.onnx"), recursive=True), name


def test_export_without_onnx_says_what_to_install(trained, tmp_path):
    """With onnx unimportable, one line names the extras file."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "onnx.py").write_text("raise ImportError('blocked', name='onnx')")
    result = run_script("export.py", trained.pth, "--out", tmp_path / "m.onnx",
                        env_extra={"PYTHONPATH": str(blocker)})
    assert_one_line_error(result, "pip install -r requirements-extras.txt")


# ---------------------------------------------------------------- benchmark.py and train.py --init

def test_benchmark_macs_count():
    from benchmark import macs_per_image

    # conv 1->16 3x3 s2 on 14x14 + 16->16 at 14x14 + 16->32 and 32->32 at 7x7 + FC 288->10
    expected = 196 * 16 * 9 + 196 * 16 * 144 + 49 * 32 * 144 + 49 * 32 * 288 + 2880
    assert macs_per_image(build_model("fastnet")) == expected


@pytest.mark.slow
def test_benchmark_quick_runs(tmp_path, data_dir):
    out = tmp_path / "bench.json"
    result = run_script("benchmark.py", "--quick", "--models", "tinynet", "--json", out, "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    (row,) = report["variants"]
    assert row["name"] == "tinynet" and row["params"] == 7_986
    assert set(row) == {"name", "params", "macs", "batch_size", "lr", "epoch_s", "train_acc_mean", "test_acc_mean",
                        "test_acc_min"}
    assert (row["batch_size"], row["lr"]) == train.recipe("tinynet")
    assert {"epoch_s", "wall_s", "test_acc"} <= set(report["reference"])
    assert report["speedup_vs_reference"] > 0 and report["device"] == "cpu" and report["torch"] == torch.__version__
    assert "speed-up of train.py over the reference" in result.stdout


def test_benchmark_rejects_unknown_model():
    assert_one_line_error(run_script("benchmark.py", "--models", "fastnet,lenet"), "unknown model 'lenet'")

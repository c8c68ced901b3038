"""export.py: ONNX that matches PyTorch, int8 that keeps accuracy, one-line errors.

These need the extras (pip install -r requirements-extras.txt); without them they are skipped."""
import glob
import os
import re
import sys

import pytest
import torch

import export
from data import to_input
from inference import probabilities


@pytest.fixture(scope="module")
def onnxruntime():
    pytest.importorskip("onnx", reason="pip install -r requirements-extras.txt")
    return pytest.importorskip("onnxruntime", reason="pip install -r requirements-extras.txt")


def test_export_onnx_matches_pytorch(onnxruntime, trained, mnist_test, tmp_path, data_dir, in_process):
    out = tmp_path / "model.onnx"
    result = in_process(export.main, [trained.pth, "--out", out, "--data-dir", data_dir])
    assert result.returncode == 0, result.stderr
    assert "max |onnxruntime - pytorch|" in result.stdout
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = mnist_test[0][:257]  # a batch size the export never saw
    got = torch.from_numpy(session.run(None, {"input": to_input(images).numpy()})[0])
    assert got.shape == (257, 10)
    assert (got.exp() - probabilities(trained.model, images)).abs().max() <= 1e-4


@pytest.mark.slow
def test_export_int8_keeps_accuracy(onnxruntime, trained, tmp_path, data_dir, script):
    out = tmp_path / "model.onnx"
    result = script("export.py", trained.pth, "--out", out, "--int8", "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    int8 = tmp_path / "model.int8.onnx"
    assert int8.stat().st_size < 0.6 * out.stat().st_size
    accs = re.search(r"accuracy ([\d.]+)% vs float ([\d.]+)%", result.stdout)
    int8_acc, float_acc = float(accs.group(1)), float(accs.group(2))
    print(result.stdout)
    assert float_acc - int8_acc <= 0.2


def test_export_refuses_bad_checkpoints(onnxruntime, tmp_path, corrupt_checkpoints, in_process, one_line_error):
    for name, pth, flags, needle in corrupt_checkpoints:
        one_line_error(in_process(export.main, [pth, *flags]), needle)
        assert not glob.glob(str(tmp_path / "**" / "*.onnx"), recursive=True), name


def test_export_without_onnx_says_what_to_install(trained, tmp_path, in_process, one_line_error, monkeypatch):
    """With onnx unimportable (None in sys.modules makes `import onnx` fail, as when it is not installed),
    one line names the extras file, and nothing is written."""
    monkeypatch.setitem(sys.modules, "onnx", None)
    result = in_process(export.main, [trained.pth, "--out", tmp_path / "m.onnx"])
    one_line_error(result, "pip install -r requirements-extras.txt")
    assert not (tmp_path / "m.onnx").exists()


def test_export_into_an_existing_folder(onnxruntime, trained, tmp_path, data_dir, in_process):
    """--out FOLDER/ writes <checkpoint stem>.onnx inside it, as cp would."""
    result = in_process(export.main, [trained.pth, "--out", f"{tmp_path}{os.sep}", "--data-dir", data_dir])
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path) == [os.path.basename(trained.pth)[:-4] + ".onnx"]


@pytest.mark.parametrize("where", ["unwritable", "missing folder"])
def test_export_refuses_an_unwritable_out_naming_out(where, onnxruntime, trained, tmp_path, data_dir, in_process,
                                                     one_line_error):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = "/proc/x.onnx" if where == "unwritable" and os.path.isdir("/proc") else str(blocker / "x.onnx")
    result = in_process(export.main, [trained.pth, "--out", out, "--data-dir", data_dir])
    one_line_error(result, f"cannot write --out '{out}'")
    assert "--out-dir" not in result.stderr

"""release.py: a release folder that holds each variant's files under stable and tagged names, with a model
card built from the sidecars; and a one-line refusal, with nothing written, for what cannot be released."""
import os

import pytest
import torch

import export
import hubconf
import release
from checkpoint import save_checkpoint, timestamp
from model import build_model, count_params


@pytest.fixture
def checkpoints(trained, tmp_path):
    """The session's trained checkpoint and a fresh tinynet one, each with its sidecar and ONNX export."""
    folder = tmp_path / "runs"
    folder.mkdir()
    torch.manual_seed(0)
    tiny = build_model("tinynet")
    tiny_pth = save_checkpoint(tiny, str(folder), dict(trained.sidecar, model="tinynet", params=count_params(tiny),
                                                       test_acc=12.5, timestamp=timestamp()))
    paths = [trained.pth, tiny_pth]
    for pth, model in ((trained.pth, trained.model), (tiny_pth, tiny)):
        with open(os.path.splitext(pth)[0] + ".onnx", "wb") as f:
            f.write(export.export_onnx(model))
    return paths


def test_a_release_holds_stable_and_tagged_names_and_a_model_card(checkpoints, trained, tmp_path, in_process,
                                                                   monkeypatch):
    monkeypatch.setenv("GITHUB_REF_NAME", "v1.2.3")
    out = tmp_path / "release"
    result = in_process(release.main, ["--out", out, "--repo", hubconf.GITHUB_REPO, *checkpoints])
    assert result.returncode == 0, result.stderr
    name = trained.sidecar["model"]
    expected = {"notes.md"}
    for pth, variant in zip(checkpoints, [name, "tinynet"], strict=True):
        stem = os.path.splitext(pth)[0]
        for ext in (".pth", ".json", ".onnx"):
            source = open(stem + ext, "rb").read()
            assert (out / (variant + ext)).read_bytes() == source == (out / (os.path.basename(stem) + ext)).read_bytes()
            expected |= {variant + ext, os.path.basename(stem) + ext}
    assert set(os.listdir(out)) == expected and not os.path.exists(f"{out}.partial")
    notes = (out / "notes.md").read_text(encoding="utf-8")
    assert notes.startswith("## MNIST models, v1.2.3")
    assert f"| {name} | {trained.sidecar['params']:,} | {trained.sidecar['test_acc']:.2f}% |" in notes
    assert "| tinynet | 7,986 | 12.50% |" in notes
    assert f"torch {trained.sidecar['torch']}" in notes
    assert f'torch.hub.load("{hubconf.GITHUB_REPO}", "{name}", pretrained=True)' in notes


def test_the_repo_must_be_the_one_hubconf_names(checkpoints, tmp_path, in_process, one_line_error):
    result = in_process(release.main, ["--out", tmp_path / "release", "--repo", "someone/else", *checkpoints])
    one_line_error(result, "set it to 'someone/else' there")
    assert not (tmp_path / "release").exists()


@pytest.mark.parametrize("problem", ["no onnx", "same variant twice"])
def test_what_cannot_be_released_is_one_line_and_writes_nothing(problem, checkpoints, tmp_path, in_process,
                                                                one_line_error):
    if problem == "no onnx":
        os.remove(os.path.splitext(checkpoints[1])[0] + ".onnx")
        needle = "run python export.py"
    else:
        checkpoints = [checkpoints[0], checkpoints[0]]
        needle = "one checkpoint per variant"
    out = tmp_path / "release"
    one_line_error(in_process(release.main, ["--out", out, "--repo", hubconf.GITHUB_REPO, *checkpoints]), needle)
    assert not out.exists() and not os.path.exists(f"{out}.partial")

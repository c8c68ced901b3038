"""checkpoint.py: saving, verifying and loading a checkpoint and its sidecar."""
import hashlib
import json
import os
import subprocess

import pytest
import torch

import cli
from checkpoint import load_checkpoint, read_sidecar, save_checkpoint, sidecar_path
from data import to_input
from model import build_model, count_params, model_name


def test_checkpoint_round_trip(trained, mnist_test, tmp_path):
    meta = dict(trained.sidecar, timestamp="20260101_000000")
    pth = save_checkpoint(trained.model, str(tmp_path), meta)
    assert os.path.basename(pth) == f"model_mnist_20260101_000000_acc{meta['test_acc']:.2f}.pth"
    reloaded = build_model(meta["model"])
    reloaded.load_state_dict(torch.load(pth, weights_only=True))  # the plain state_dict a user loads
    x = to_input(mnist_test[0][:32])
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(x), trained.model(x))
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(pth), os.path.basename(pth)[:-4] + ".json"])


def test_sidecar_agrees_with_checkpoint(trained):
    side = trained.sidecar
    with open(trained.pth, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == side["sha256"]
    stem = os.path.basename(trained.pth)[:-4]
    with open(sidecar_path(trained.pth)) as f:
        assert json.load(f) == side
    assert side["checkpoint"] == stem + ".pth"
    assert stem == f"model_mnist_{side['timestamp']}_acc{side['test_acc']:.2f}"
    assert side["params"] == count_params(trained.model)
    assert side["model"] == model_name(trained.model)


def test_a_sidecar_from_before_the_recipe_fields_still_loads(trained, tmp_path):
    """Sidecars written before the sidecar recorded the whole recipe (no optimizer, schedule or
    augmentation strengths) keep loading."""
    old_keys = ("model", "params", "train_acc", "test_acc", "epochs", "batch_size", "lr", "seed", "augment",
                "label_smoothing", "init", "device", "torch", "torchvision", "git_commit", "timestamp", "train_s",
                "wall_s", "checkpoint", "sha256")
    pth = tmp_path / os.path.basename(trained.pth)
    pth.write_bytes(open(trained.pth, "rb").read())
    (tmp_path / (pth.stem + ".json")).write_text(json.dumps({k: trained.sidecar[k] for k in old_keys}))
    model, sidecar = load_checkpoint(str(pth))
    assert model_name(model) == trained.sidecar["model"] and "schedule" not in sidecar


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_checkpoint_files_follow_umask(umask, trained, tmp_path):
    """The .pth and sidecar get the mode any new file of the user's gets (0o666 less the umask)."""
    if os.name == "nt":
        pytest.skip("Windows has no umask")
    old = os.umask(umask)
    try:
        pth = save_checkpoint(trained.model, str(tmp_path), dict(trained.sidecar, timestamp="20260101_000000"))
    finally:
        os.umask(old)
    for path in (pth, sidecar_path(pth)):
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_loading_refuses_pickled_objects(tmp_path):
    """Checkpoints load with weights_only=True: a pickle carrying arbitrary objects is refused."""
    pth = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": subprocess.CompletedProcess(["x"], 0)}, pth)
    with pytest.raises(cli.UserError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(str(pth), "fastnet")


def test_loading_into_wrong_variant_is_clear(trained):
    other = "tinynet" if trained.sidecar["model"] != "tinynet" else "fastnet"
    with pytest.raises(cli.UserError, match=f"does not hold '{other}' weights"):
        load_checkpoint(trained.pth, other)


def test_tampered_checkpoint_is_refused(trained, tmp_path):
    pth = tmp_path / os.path.basename(trained.pth)
    data = bytearray(open(trained.pth, "rb").read())
    data[-100] ^= 0xFF
    pth.write_bytes(bytes(data))
    (tmp_path / (pth.stem + ".json")).write_text(json.dumps(trained.sidecar))
    with pytest.raises(cli.UserError, match="does not match the sha256"):
        load_checkpoint(str(pth))


def test_missing_sidecar_reads_as_empty(tmp_path):
    assert read_sidecar(str(tmp_path / "m.pth")) == {}

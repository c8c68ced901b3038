"""checkpoint.py: saving, verifying and loading a checkpoint and its sidecar."""
import hashlib
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import checkpoint
import cli
from checkpoint import load_checkpoint, read_sidecar, save_checkpoint, sidecar_path
from data import to_input
from model import MODELS, build_model, count_params, model_name


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
    with open(sidecar_path(trained.pth), encoding="utf-8") as f:
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


# ---------------------------------------------------------------- damaged and hostile checkpoints

@pytest.mark.parametrize("sidecar", ["[]", "null", '{"model": ["fastnet"]}', '"fastnet"', '{"sha256": 5}'])
def test_a_sidecar_that_is_not_an_object_of_strings_is_refused(sidecar, trained, tmp_path):
    pth = tmp_path / "m.pth"
    pth.write_bytes(open(trained.pth, "rb").read())
    (tmp_path / "m.json").write_text(sidecar)
    with pytest.raises(cli.UserError, match="is not a checkpoint sidecar"):
        load_checkpoint(str(pth))


def test_non_finite_weights_are_refused(trained, tmp_path):
    state = trained.model.state_dict()
    first = next(iter(state))
    state[first] = torch.full_like(state[first], float("nan"))
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(cli.UserError, match="holds NaN or infinite weights"):
        load_checkpoint(str(tmp_path / "nan.pth"), trained.sidecar["model"])


@pytest.mark.parametrize("case", ["folder", "loop", "broken link"])
def test_a_checkpoint_path_that_is_no_file_says_why(case, tmp_path):
    path = tmp_path / "m.pth"
    if case == "folder":
        path.mkdir()
    elif os.name == "nt":
        pytest.skip("symbolic links need privileges on Windows")
    elif case == "loop":
        os.symlink(path, path)
    else:
        os.symlink(tmp_path / "gone.pth", path)
    expected = {"folder": "is a folder", "loop": "is a symbolic link that loops", "broken link": "broken symbolic"}
    with pytest.raises(cli.UserError, match=expected[case]):
        load_checkpoint(str(path), "fastnet")


def test_runs_finishing_in_the_same_second_keep_both(trained, tmp_path):
    """Two runs with the same stamp and accuracy: distinct names (the stamp moves on), both complete."""
    meta = dict(trained.sidecar, timestamp="20260101_000059")
    paths = [save_checkpoint(trained.model, str(tmp_path), meta) for _ in range(3)]
    assert [os.path.basename(p)[12:27] for p in paths] == ["20260101_000059", "20260101_000100", "20260101_000101"]
    for p in paths:
        model, sidecar = load_checkpoint(p)
        assert sidecar["checkpoint"] == os.path.basename(p) and p.endswith(f"{sidecar['timestamp']}_acc"
                                                                           f"{meta['test_acc']:.2f}.pth")


def test_concurrent_saves_never_overwrite(trained, tmp_path):
    meta = dict(trained.sidecar, timestamp="20260101_000000")
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: save_checkpoint(trained.model, str(tmp_path), meta), range(8)))
    assert len(set(paths)) == 8
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(p) for p in paths] +
                                                  [os.path.basename(sidecar_path(p)) for p in paths])
    for p in paths:
        load_checkpoint(p)


def test_a_failed_sidecar_takes_its_checkpoint_back(trained, tmp_path, monkeypatch):
    real_write = checkpoint.atomic_write

    def write(path, data, replace=True):
        if path.endswith(".json"):
            raise cli.RunFailed(f"could not write {path} (No space left on device)")
        return real_write(path, data, replace)

    monkeypatch.setattr(checkpoint, "atomic_write", write)
    with pytest.raises(cli.RunFailed):
        save_checkpoint(trained.model, str(tmp_path), dict(trained.sidecar, timestamp="20260101_000000"))
    assert os.listdir(tmp_path) == []


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                    max_size=4), max_leaves=12)
sidecars = json_values | st.fixed_dictionaries({}, optional={"model": json_values, "sha256": json_values})


@pytest.mark.parametrize("examples", [pytest.param(100, id="quick"),
                                      pytest.param(2000, id="long", marks=pytest.mark.slow)])
def test_fuzzed_sidecars_load_or_fail_in_one_line(examples, trained, tmp_path):
    """Any JSON in the sidecar (or a file that is not JSON) loads the model or is a UserError."""
    pth = tmp_path / "m.pth"
    pth.write_bytes(open(trained.pth, "rb").read())

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(sidecars | st.binary(max_size=64).map(lambda b: b.decode("latin-1")))
    def check(sidecar):
        (tmp_path / "m.json").write_text(sidecar if isinstance(sidecar, str) else json.dumps(sidecar), "utf-8")
        try:
            model, loaded = load_checkpoint(str(pth), "fastnet")
        except cli.UserError as e:
            assert "\n" not in str(e)
        else:
            assert model_name(model) in MODELS

    check()

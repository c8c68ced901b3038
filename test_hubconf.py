"""hubconf.py: torch.hub lists and documents every variant, and loads fresh, given and released weights
(the release stood in for by file:// URLs, so no network is needed), plus the preprocess helper."""
import ast
import os
import shutil

import pytest
import torch

import hubconf
from checkpoint import load_checkpoint
from data import to_input
from model import MODELS
from plots import gray_png

HERE = os.path.dirname(os.path.abspath(__file__))


def hub_load(name, **kwargs):
    return torch.hub.load(HERE, name, source="local", **kwargs)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """torch.hub's cache in a fresh folder, so that every download in a test is a real one."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


@pytest.fixture
def release(trained, tmp_path, monkeypatch):
    """A folder standing in for the latest release: <variant>.pth and .json, as release.py names them."""
    folder = tmp_path / "release"
    folder.mkdir()
    stem = hubconf.RELEASE_STEM.format(model=trained.sidecar["model"])
    shutil.copy(trained.pth, folder / f"{stem}.pth")
    shutil.copy(trained.pth[:-4] + ".json", folder / f"{stem}.json")
    monkeypatch.setenv("MNIST_RELEASE_URL", folder.as_uri() + "/{asset}")
    return folder


def digits(mnist_test, n=64):
    return to_input(mnist_test[0][:n])


@pytest.fixture
def from_github(hub_dir):
    """"OWNER/REPO:main" as torch.hub.list and torch.hub.help take it (they read GitHub repositories only),
    answered from torch.hub's own cache, filled here with this checkout's files: no network."""
    owner, name = hubconf.GITHUB_REPO.split("/")
    shutil.copytree(HERE, hub_dir / f"{owner}_{name}_main", ignore=shutil.ignore_patterns(".*", "__pycache__", "data"))
    return f"{hubconf.GITHUB_REPO}:main"


def test_hub_lists_every_variant_and_the_helper(from_github):
    assert sorted(torch.hub.list(from_github, trust_repo=True, verbose=False)) == sorted([*MODELS, "preprocess"])


@pytest.mark.parametrize("name", MODELS)
def test_each_entry_point_documents_its_use(name, from_github):
    doc = torch.hub.help(from_github, name, trust_repo=True)
    assert doc.startswith(f"{name}: ") and "pretrained=True" in doc and "checkpoint=PATH_OR_URL" in doc
    assert "(N, 1, 28, 28)" in doc and "0.1307" in doc and "log-probabilities" in doc


def test_fresh_weights_in_eval_mode():
    model = hub_load("tinynet")
    assert type(model) is MODELS["tinynet"] and not model.training
    assert not hasattr(model, "sidecar")  # fresh weights carry no record


def test_a_checkpoint_gives_predicts_model(trained, mnist_test):
    """checkpoint=PATH: the same outputs as the model predict.py loads from that file, in eval mode."""
    model = hub_load(trained.sidecar["model"], checkpoint=trained.pth)
    reference = load_checkpoint(trained.pth)[0].eval()
    assert not model.training and model.sidecar == trained.sidecar
    with torch.no_grad():
        assert torch.equal(model(digits(mnist_test)), reference(digits(mnist_test)))


def test_pretrained_downloads_the_release_once(trained, release, hub_dir, mnist_test):
    name = trained.sidecar["model"]
    model = hub_load(name, pretrained=True, progress=False)
    with torch.no_grad():
        assert torch.equal(model(digits(mnist_test)), trained.model(digits(mnist_test)))
    assert model.sidecar["sha256"] == trained.sidecar["sha256"]  # the sidecar came too, and was checked
    assert sorted(os.listdir(hub_dir / "checkpoints")) == [f"{name}.json", f"{name}.pth"]
    shutil.rmtree(release)  # the release gone: the cached copy serves
    assert torch.equal(hub_load(name, pretrained=True).state_dict()["net.0.weight"],
                       trained.model.state_dict()["net.0.weight"])


def test_a_url_carrying_a_hash_is_checked(trained, tmp_path, hub_dir):
    """name-<sha256 prefix>.pth, as torchvision names its weights: the right prefix loads, a wrong one fails."""
    sha = trained.sidecar["sha256"]
    good, bad = tmp_path / f"weights-{sha[:10]}.pth", tmp_path / "weights-0123456789.pth"
    shutil.copy(trained.pth, good)
    shutil.copy(trained.pth, bad)
    name = trained.sidecar["model"]
    model = hub_load(name, checkpoint=good.as_uri(), progress=False)
    assert model.sidecar == {}  # no sidecar was published beside it: the weights alone
    assert torch.equal(model.state_dict()["net.0.weight"], trained.model.state_dict()["net.0.weight"])
    with pytest.raises(RuntimeError, match="invalid hash value"):
        hub_load(name, checkpoint=bad.as_uri(), progress=False)


def test_a_tampered_release_is_refused(trained, release, hub_dir):
    name = trained.sidecar["model"]
    weights = bytearray((release / f"{name}.pth").read_bytes())
    weights[len(weights) // 2] ^= 0xFF
    (release / f"{name}.pth").write_bytes(bytes(weights))
    with pytest.raises(Exception, match="does not match the sha256"):
        hub_load(name, pretrained=True, progress=False)


def test_another_variants_checkpoint_says_which_to_load(trained):
    other = "tinynet" if trained.sidecar["model"] != "tinynet" else "fastnet"
    with pytest.raises(ValueError, match=f"holds '{trained.sidecar['model']}' weights"):
        hub_load(other, checkpoint=trained.pth)


def test_pretrained_and_checkpoint_together_are_refused(trained):
    with pytest.raises(ValueError, match="not both"):
        hub_load("fastnet", pretrained=True, checkpoint=trained.pth)


def test_preprocess_reads_a_file_as_predict_does(trained, mnist_test, tmp_path):
    """The helper turns a user's image into the model's input: a photo-like PNG of a test digit is read
    back as that digit, whether passed as a path or as bytes."""
    to_model_input = hub_load("preprocess")
    images, labels = mnist_test
    for i in range(8):
        path = tmp_path / f"{i}.png"
        path.write_bytes(gray_png(255 - images[i][0].numpy()))  # dark ink on white, as on paper
        x = to_model_input(str(path))
        assert x.shape == (1, 1, 28, 28) and x.dtype == torch.float32
        assert torch.equal(x, to_model_input(path.read_bytes()))
        assert int(trained.model(x).argmax()) == int(labels[i])


def module_level_imports(name, seen):
    """The repo's modules that importing `name` imports (module level only), and what else they import."""
    path = os.path.join(HERE, name + ".py")
    if name in seen or not os.path.isfile(path):
        return seen
    seen.add(name)
    with open(path, encoding="utf-8") as f:
        for node in ast.parse(f.read()).body:
            if isinstance(node, ast.Import):
                found = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                found = [node.module.split(".")[0]]
            else:
                continue
            for module in found:
                seen |= {module} | module_level_imports(module, seen)
    return seen


def test_hubconf_imports_only_what_loading_needs():
    imported = module_level_imports("hubconf", set())
    assert {"model", "checkpoint", "torch"} <= imported
    assert not imported & {"train", "plots", "matplotlib", "benchmark", "eval_sets", "torchvision"}

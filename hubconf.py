"""torch.hub entry points: one per variant in model.py's MODELS, and `preprocess`.

    model = torch.hub.load("OWNER/REPO", "fastnet", pretrained=True)     # the latest release's weights
    model = torch.hub.load("OWNER/REPO", "fastnet", checkpoint="model_mnist_<stamp>_acc<acc>.pth")  # or a URL
    model = torch.hub.load("OWNER/REPO", "tinynet")                      # fresh weights, to train
    to_input = torch.hub.load("OWNER/REPO", "preprocess")               # an image file -> (1, 1, 28, 28)

Every model comes back in eval mode and takes (N, 1, 28, 28) floats: white digits on black, centred by
mass in a 20x20 box as MNIST's are, scaled to [0, 1] and standardised with MNIST's mean 0.1307 and std
0.3081 (data.to_input). It returns (N, 10) log-probabilities. `preprocess` makes that input from a photo,
scan or drawing, as predict.py does. This file imports only what loading a model needs (no training code,
no plotting), so torch.hub's `dependencies` check is all a user needs to pass.
"""
import os as _os
from urllib.error import URLError as _URLError
from urllib.parse import urlsplit as _urlsplit

import torch as _torch

from checkpoint import load_checkpoint as _load_checkpoint
from checkpoint import read_sidecar as _read_sidecar
from checkpoint import sidecar_path as _sidecar_path
from model import MODELS as _MODELS
from model import build_model as _build_model

dependencies = ["torch", "numpy", "scipy", "PIL"]  # checked by torch.hub before any entry point runs

# Where releases are published: the workflow's release job attaches <variant>.pth and <variant>.json
# (release.py names them), and refuses to publish from another repository than this one. A fork that
# publishes its own releases edits GITHUB_REPO; MNIST_RELEASE_URL (the same pattern) points elsewhere,
# a mirror or a local folder.
GITHUB_REPO = "OWNER/REPO"
RELEASE_URL = "https://github.com/{repo}/releases/latest/download/{asset}"
RELEASE_STEM = "{model}"  # a variant's release files: <stem>.pth, its sidecar .json and ONNX export .onnx


def _release_url(asset):
    """The URL of a release asset, `fastnet.pth` say, in the latest release."""
    return _os.environ.get("MNIST_RELEASE_URL", RELEASE_URL).format(repo=GITHUB_REPO, asset=asset)


def _download(url, progress):
    """A checkpoint URL as a local path: fetched once into torch.hub's cache, its hash checked when the file
    name carries one (name-<sha256 prefix>.pth), and its sidecar fetched beside it when the URL has one."""
    model_dir = _os.path.join(_torch.hub.get_dir(), "checkpoints")
    _torch.hub.load_state_dict_from_url(url, model_dir, progress=progress, check_hash=True, weights_only=True)
    path = _os.path.join(model_dir, _os.path.basename(_urlsplit(url).path))
    sidecar = _sidecar_path(path)
    if not _os.path.exists(sidecar):
        parts = _urlsplit(url)
        sidecar_url = parts._replace(path=_os.path.splitext(parts.path)[0] + ".json").geturl()
        try:
            _torch.hub.download_url_to_file(sidecar_url, sidecar, progress=False)
        except (_URLError, OSError):
            pass  # none published: the weights alone, their variant taken from the entry point
    return path


def _entry_point(name):
    def load(pretrained=False, checkpoint=None, progress=True):
        if pretrained and checkpoint:
            raise ValueError("pass pretrained=True or checkpoint=PATH_OR_URL, not both")
        source = _release_url(RELEASE_STEM.format(model=name) + ".pth") if pretrained else checkpoint
        if source is None:
            return _build_model(name).eval()
        if "://" in str(source):
            source = _download(str(source), progress)
        recorded = _read_sidecar(str(source)).get("model", name)
        if recorded != name:
            raise ValueError(f"{source} holds {recorded!r} weights: load it with "
                             f"torch.hub.load(..., {recorded!r}, checkpoint=...)")
        model, sidecar = _load_checkpoint(str(source), name)
        model.sidecar = sidecar  # what trained it and how it scored ({} when no sidecar came with it)
        return model.eval()

    cls = _MODELS[name]
    load.__name__ = load.__qualname__ = name
    summary = " ".join(cls.__doc__.split()).split(". ")[0].rstrip(".")  # the class docstring's first sentence
    load.__doc__ = f"""{name}: {summary}.

    pretrained=True: the weights of the latest release, {_release_url(RELEASE_STEM.format(model=name) + ".pth")}
        (cached in torch.hub.get_dir()/checkpoints: delete it there to fetch a newer release).
    checkpoint=PATH_OR_URL: a model_mnist_*.pth instead, checked against its sidecar when one is beside it.
    Neither: fresh weights. The model comes back in eval mode; `model.sidecar` holds the sidecar's record.
    Input (N, 1, 28, 28), white on black, centred by mass, standardised (mean 0.1307, std 0.3081): see
    torch.hub.load(..., "preprocess"). Output (N, 10) log-probabilities."""
    return load


for _name in _MODELS:
    globals()[_name] = _entry_point(_name)


def preprocess():
    """A function from an image (a file path, or the file's bytes: photo, scan, drawing) to the (1, 1, 28, 28)
    input every model takes: predict.py's own path (the digit found, centred, white on black, standardised).
    It raises cli.UserError, with one line saying why, when the image holds no readable digit."""
    from cli import read_file
    from data import to_input
    from preprocess import prepare

    def to_model_input(image):
        if isinstance(image, bytes):
            return to_input(prepare(image, "the image")[None])
        return to_input(prepare(read_file(str(image), "image"), str(image))[None])

    return to_model_input

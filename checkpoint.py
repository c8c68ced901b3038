"""A trained model on disk and back: model_mnist_<stamp>_acc<acc>.pth (a plain state_dict) and its
JSON sidecar <stem>.json, which records what rebuilds the model and reproduces the run.

    path = save_checkpoint(model, out_dir, metadata)     # atomic; the sidecar gets the sha256
    model, sidecar = load_checkpoint(path)               # verified, weights_only=True
"""
import datetime
import hashlib
import importlib.metadata
import io
import json
import os
import subprocess

import torch

from cli import UserError, atomic_write, read_file, unsave
from model import MODELS, build_model

HERE = os.path.dirname(os.path.abspath(__file__))
STAMP = "%Y%m%d_%H%M%S"


def timestamp():
    """Now, as checkpoint names carry it."""
    return datetime.datetime.now().strftime(STAMP)


def checkpoint_stem(stamp, test_acc):
    return f"model_mnist_{stamp}_acc{test_acc:.2f}"


def sidecar_path(pth):
    return os.path.splitext(pth)[0] + ".json"


def save_checkpoint(model, out_dir, metadata):
    """Write <stem>.pth (plain state_dict) then its <stem>.json sidecar; returns the .pth path.

    `metadata` needs "timestamp" and "test_acc" (they name the files); the sidecar adds the sha256.
    An existing checkpoint is never overwritten: where the name is taken (two runs finishing in the
    same second), the stamp moves on to the next free second. Both files are there, or neither."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    weights = buf.getvalue()
    stamp = datetime.datetime.strptime(metadata["timestamp"], STAMP)
    while True:
        stem = checkpoint_stem(stamp.strftime(STAMP), metadata["test_acc"])
        pth = os.path.join(out_dir, stem + ".pth")
        if atomic_write(pth, weights, replace=False):
            break
        stamp += datetime.timedelta(seconds=1)
    sidecar = dict(metadata, timestamp=stamp.strftime(STAMP), checkpoint=stem + ".pth",
                   sha256=hashlib.sha256(weights).hexdigest())
    try:
        atomic_write(sidecar_path(pth), (json.dumps(sidecar, indent=2) + "\n").encode())
    except BaseException:
        unsave(pth)  # a checkpoint without its sidecar would be half a result
        raise
    return pth


def provenance():
    """The versions and commit a sidecar records, so that a run can be traced and repeated."""
    return {"torch": torch.__version__, "torchvision": package_version("torchvision"), "git_commit": git_commit()}


def package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def read_sidecar(pth):
    """The checkpoint's JSON sidecar as a dict; {} when there is none. The fields loading relies on
    ("model", "sha256") are checked to be strings."""
    path = sidecar_path(pth)
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            sidecar = json.load(f)
    except (OSError, ValueError):
        raise UserError(f"sidecar {path} is not readable JSON: delete it and pass --model NAME") from None
    if not isinstance(sidecar, dict) or any(not isinstance(sidecar.get(k, ""), str) for k in ("model", "sha256")):
        raise UserError(f"sidecar {path} is not a checkpoint sidecar (a JSON object with \"model\" and "
                        "\"sha256\" as strings): delete it and pass --model NAME")
    return sidecar


def verify(pth, weights, sidecar):
    """The .pth bytes against the sha256 its sidecar recorded (when it recorded one)."""
    if sidecar.get("sha256") and hashlib.sha256(weights).hexdigest() != sidecar["sha256"]:
        raise UserError(f"{pth} does not match the sha256 in its sidecar: the file is corrupt or was "
                        "replaced; download it again")


def load_checkpoint(pth, name=None):
    """(model, sidecar) rebuilt from a .pth and its sidecar, always with weights_only=True.

    `name` picks the variant when there is no sidecar. Every way this can go wrong (missing,
    truncated or tampered file, another variant's weights) is a one-line UserError."""
    weights = read_file(pth, "checkpoint")
    if not weights.startswith((b"PK", b"\x80")):  # torch.save writes a zip file, or else a pickle
        raise UserError(f"{pth} is not a readable PyTorch checkpoint (torch.save writes a zip or a pickle; this "
                        "is neither): an image given in the checkpoint's place? Pass the .pth train.py wrote")
    sidecar = read_sidecar(pth)
    verify(pth, weights, sidecar)
    name = name or sidecar.get("model")
    if name is None:
        raise UserError(f"no sidecar {sidecar_path(pth)!r} says which model {pth} is: pass --model NAME")
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}: use --model with one of {', '.join(MODELS)}")
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception:
        raise UserError(f"{pth} is not a readable PyTorch checkpoint (truncated or corrupt): "
                        "download or train it again") from None
    model = build_model(name)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError):
        raise UserError(f"{pth} does not hold {name!r} weights as model.py builds it (another variant? or from "
                        f"before a change to it: the sidecar's git_commit says which): pass the right --model, "
                        f"or train it again") from None
    if not all(v.isfinite().all() for v in model.state_dict().values() if v.is_floating_point()):
        raise UserError(f"{pth} holds NaN or infinite weights (the run that wrote it diverged): train it again")
    return model, sidecar

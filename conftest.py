"""Shared fixtures: one trained default model per test session, and the MNIST test set.

`pytest --checkpoint PATH` (or env MNIST_CHECKPOINT) tests that checkpoint instead of training one,
which is how CI tests the model that `python train.py` just produced."""
import os
from types import SimpleNamespace

import pytest

import train


def pytest_addoption(parser):
    parser.addoption("--checkpoint", default=os.environ.get("MNIST_CHECKPOINT"),
                     help="test this model_mnist_*.pth instead of training one (env MNIST_CHECKPOINT)")


@pytest.fixture(scope="session")
def data_dir():
    return os.environ.get("MNIST_DATA_DIR", "./data")


@pytest.fixture(scope="session")
def mnist_test(data_dir):
    return train.load_mnist(data_dir, False, "cpu")


@pytest.fixture(scope="session")
def mnist_train(data_dir):
    return train.load_mnist(data_dir, True, "cpu")


@pytest.fixture(scope="session")
def trained(request, tmp_path_factory, data_dir):
    """The model under test: the --checkpoint given, or the default variant trained here for one
    epoch exactly as `python train.py` does (on the CPU, into a temporary folder)."""
    pth = request.config.getoption("--checkpoint")
    out_dir = None
    if not pth:
        out_dir = tmp_path_factory.mktemp("train_run")
        pth = train.main(["--out-dir", str(out_dir), "--device", "cpu", "--data-dir", data_dir])
    model, sidecar = train.load_checkpoint(pth)
    model.eval()
    return SimpleNamespace(model=model, sidecar=sidecar, pth=pth, out_dir=out_dir)

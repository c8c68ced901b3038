"""Shared fixtures and helpers: one trained default model per test session, MNIST, and the ways to
run a script (fresh process or in-process) and check its one-line errors.

`pytest --checkpoint=PATH` (or env MNIST_CHECKPOINT) tests that checkpoint instead of training one,
which is how CI tests the model that `python train.py` just produced."""
import glob
import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import cli
import data
import train
from checkpoint import load_checkpoint
from data import download_mnist, load_mnist, mnist_files
from model import build_model

HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_addoption(parser):
    parser.addoption("--checkpoint", default=os.environ.get("MNIST_CHECKPOINT"),
                     help="test this model_mnist_*.pth instead of training one (env MNIST_CHECKPOINT)")


def pytest_configure(config):
    """`pytest` with no paths from a folder inside the repo runs the suite as from the repo root:
    pytest itself would look for tests only in that folder (testpaths apply at the root alone)."""
    if config.args_source == pytest.Config.ArgsSource.INVOCATION_DIR and os.path.abspath(os.getcwd()) != HERE:
        os.chdir(HERE)  # relative paths (MNIST_DATA_DIR=../shared/data) then mean what they mean at the root
        config.args = sorted(glob.glob(os.path.join(HERE, "test_*.py")))
    if not config.getoption("help"):
        check_mnist()


def check_mnist():
    """One line, before any test runs, when MNIST is neither on disk nor downloadable."""
    data_dir = cli.default_data_dir()
    if all(os.path.isfile(p) for split in ("train", "test") for p in mnist_files(data_dir, split)):
        return
    try:
        download_mnist(data_dir)
    except cli.UserError:
        raise pytest.UsageError(f"MNIST not found in {os.path.abspath(data_dir)!r} (its MNIST/raw/*-ubyte "
                                "files) and it could not be downloaded: set MNIST_DATA_DIR to a folder that holds "
                                "it") from None


@pytest.fixture(scope="session")
def data_dir():
    return cli.default_data_dir()


@pytest.fixture(scope="session")
def mnist_test(data_dir):
    return load_mnist(data_dir, "test", "cpu")


@pytest.fixture(scope="session")
def mnist_train(data_dir):
    return load_mnist(data_dir, "train", "cpu")


@pytest.fixture
def part_of_mnist(monkeypatch, mnist_train, mnist_test):
    """part_of_mnist(train, test): data.load_mnist hands out only the first `train` training and `test`
    test images, from the session's copies: a real run that takes seconds."""
    def use(train, test):
        parts = {"train": (mnist_train, train), "test": (mnist_test, test)}
        monkeypatch.setattr(data, "load_mnist", lambda d, split, dev: tuple(
            t[:parts[split][1]].to(dev) for t in parts[split][0]))
    return use


@pytest.fixture(scope="session")
def trained(request, tmp_path_factory, data_dir):
    """The model under test: the --checkpoint given, or the default variant trained here for one
    epoch exactly as `python train.py` does (on the CPU, into a temporary folder)."""
    pth = request.config.getoption("--checkpoint")
    out_dir = None
    if not pth:
        out_dir = tmp_path_factory.mktemp("train_run")
        pth = train.main(["--out-dir", str(out_dir), "--device", "cpu", "--data-dir", data_dir])
    model, sidecar = load_checkpoint(pth)
    model.eval()
    return SimpleNamespace(model=model, sidecar=sidecar, pth=pth, out_dir=out_dir)


# ---------------------------------------------------------------- running the scripts

def run_script(script, *args, env_extra=None, timeout=600):
    """Run one of the repo's scripts as a user would, in a fresh process."""
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, os.path.join(HERE, script), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)


def assert_one_line_error(result, needle, code=cli.EXIT_USAGE):
    """Exit `code`, one line on stderr containing `needle`, no traceback; for bad input (2), which is
    found before any work, nothing on stdout either."""
    assert result.returncode == code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert needle in lines[0], lines[0]
    if code == cli.EXIT_USAGE:
        assert result.stdout == ""


@pytest.fixture(scope="session")
def offline_env():
    """Environment variables that send every download to a closed local port."""
    return {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


@pytest.fixture(scope="session")
def script():
    """script(name, *args, env_extra=None): a CompletedProcess of the script run in a fresh process."""
    return run_script


@pytest.fixture(scope="session")
def one_line_error():
    """one_line_error(result, needle, code=2): the result is one clear line on stderr and that exit code."""
    return assert_one_line_error


@pytest.fixture
def in_process(capsys):
    """in_process(entry, argv): a script's main through cli.run_cli in this process, as a CompletedProcess.
    The same checks as a fresh process without its torch import; real processes are tested too."""
    def run(entry, argv):
        try:
            cli.run_cli(entry, [str(a) for a in argv])
            code = 0
        except SystemExit as e:
            code = e.code
        stdout, stderr = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, stdout, stderr)
    return run


@pytest.fixture
def corrupt_checkpoints(trained, tmp_path):
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


@pytest.fixture
def full_disk(tmp_path):
    """(folder, fill): a real 2 MB file system (tmpfs, which needs root on Linux; skipped elsewhere)
    and fill(), which takes every free byte of it, as another process might mid-run."""
    folder = tmp_path / "small_disk"
    folder.mkdir()
    if sys.platform != "linux" or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
                                                 capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root on Linux")

    def fill():
        with open(folder / "ballast", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass

    yield folder, fill
    subprocess.run(["umount", str(folder)], check=True)

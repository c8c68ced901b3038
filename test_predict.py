"""predict.py: the user's own images, through the CLI and its preprocessing."""
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import predict
from inference import probabilities

HERE = os.path.dirname(os.path.abspath(__file__))


def as_photo(image_uint8, path, size=(180, 240), mode="RGB"):
    """Save an MNIST digit the way people have them: dark ink on light paper, larger, in colour."""
    from PIL import Image

    paper = (255 - image_uint8[0]).numpy()
    Image.fromarray(paper).resize(size, Image.BILINEAR).convert(mode).save(path)
    return path


def test_preprocessing_reproduces_mnist_framing(mnist_test):
    """An MNIST digit run through to_mnist comes back where it was: 20x20 box, centred by mass."""
    image = mnist_test[0][0, 0].float() / 255
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
    acc = 100 * (probabilities(trained.model, torch.stack(prepared)).argmax(1) == labels[:200]).float().mean()
    print(f"accuracy on 200 re-photographed test digits: {acc:.1f}%")
    assert acc >= 97.0


def test_transparent_drawing_is_read_as_ink_on_paper(tmp_path):
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    ImageDraw.Draw(img).line([(50, 15), (50, 85)], fill=(0, 0, 0, 255), width=8)
    img.save(tmp_path / "one.png")
    out = predict.to_mnist(predict.load_image(str(tmp_path / "one.png")))
    assert out.max() == 255 and out[0, :, :3].sum() == 0  # white stroke, black margins


def test_predict_cli_prints_one_line_per_image(trained, mnist_test, tmp_path, script):
    paths = [as_photo(mnist_test[0][i], tmp_path / f"d{i}.png") for i in range(3)]
    result = script("predict.py", trained.pth, *paths, "--top", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    for line, path, label in zip(lines, paths, mnist_test[1][:3]):
        assert re.fullmatch(rf"{re.escape(str(path))}: \d \(\d+\.\d%\), \d \(\d+\.\d%\), \d \(\d+\.\d%\)", line)
        assert line.split(": ")[1].startswith(f"{int(label)} (")


def test_predict_without_sidecar_takes_model_flag(trained, mnist_test, tmp_path, in_process, one_line_error):
    pth = tmp_path / "bare.pth"
    shutil.copy(trained.pth, pth)
    path = as_photo(mnist_test[0][0], tmp_path / "d.png")
    one_line_error(in_process(predict.main, [pth, path]), "pass --model NAME")
    result = in_process(predict.main, [pth, path, "--model", trained.sidecar["model"]])
    assert result.returncode == 0 and result.stdout.startswith(f"{path}: {int(mnist_test[1][0])} (")


def test_predict_evaluate(trained, tmp_path, data_dir, in_process):
    result = in_process(predict.main, [trained.pth, "--evaluate", "--out-dir", tmp_path, "--data-dir", data_dir])
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


def test_predict_refuses_bad_checkpoints(trained, mnist_test, tmp_path, corrupt_checkpoints, in_process,
                                         one_line_error):
    image = as_photo(mnist_test[0][0], tmp_path / "d.png")
    for name, pth, flags, needle in corrupt_checkpoints:
        one_line_error(in_process(predict.main, [pth, image, *flags]), needle)


def test_predict_refuses_bad_images(trained, mnist_test, tmp_path, in_process, one_line_error):
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
        one_line_error(in_process(predict.main, [trained.pth, good, tmp_path / bad]), needle)

"""predict.py: the user's own images, through the CLI and its preprocessing."""
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli
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
    for bad, needle in (("notes.png", "is not a readable image"), ("white.png", "no digit found"),
                        ("black.png", "no digit found"), ("empty.png", "is not a readable image"),
                        ("missing.png", "not found")):
        # the good image first: nothing is printed for it when a later one is bad
        one_line_error(in_process(predict.main, [trained.pth, good, tmp_path / bad]), needle)


# ---------------------------------------------------------------- damaged input, fuzzed input

def test_predict_refuses_nan_weights(trained, mnist_test, tmp_path, in_process, one_line_error):
    state = {k: v.clone() for k, v in trained.model.state_dict().items()}
    state["net.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    image = as_photo(mnist_test[0][0], tmp_path / "d.png")
    one_line_error(in_process(predict.main, [tmp_path / "nan.pth", image, "--model", trained.sidecar["model"]]),
                   "holds NaN or infinite weights")


def test_predict_evaluate_refuses_labels_out_of_range(trained, tmp_path, data_dir, in_process, one_line_error):
    from data import mnist_files

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = mnist_files(data_dir, "test")
    shutil.copy(images, raw)
    damaged = bytearray(open(labels, "rb").read())
    damaged[-1] = 200
    (raw / os.path.basename(labels)).write_bytes(bytes(damaged))
    one_line_error(in_process(predict.main, [trained.pth, "--evaluate", "--data-dir", tmp_path, "--out-dir", tmp_path]),
                   "has labels outside 0-9 (up to 200)")


@pytest.mark.parametrize("case, needle", [("folder", "is a folder"), ("loop", "is a symbolic link that loops")])
def test_predict_says_why_a_path_is_no_image(case, needle, trained, tmp_path, in_process, one_line_error):
    path = tmp_path / "digit.png"
    if case == "folder":
        path.mkdir()
    elif os.name == "nt":
        pytest.skip("symbolic links need privileges on Windows")
    else:
        os.symlink(path, path)
    one_line_error(in_process(predict.main, [trained.pth, path]), needle)


def png(*chunks):
    return b"\x89PNG\r\n\x1a\n" + b"".join(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
                                         for t, d in chunks)


def tiff_with_samples_per_pixel(n):
    """An RGB TIFF whose SamplesPerPixel tag claims n."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack("<H", data[entry:entry + 2])[0] == 277:
            data[entry + 8:entry + 10] = struct.pack("<H", n)
    return bytes(data)


HEADER = struct.pack(">IIBBBBB", 20, 20, 8, 0, 0, 0, 0)
PIXELS = zlib.compress(b"".join(b"\0" + bytes(range(20)) for _ in range(20)))
CRAFTED = {  # what fuzzing found crashing (ValueError, SyntaxError) or printing Pillow's log lines
    "truncated IHDR": png((b"IHDR", HEADER[:4])),
    "garbage chunk inside the image data": png((b"IHDR", HEADER), (b"IDAT", PIXELS[:10]), (b"\x90\x07s\x01", b"abc"),
                                               (b"IDAT", PIXELS[10:]), (b"IEND", b"")),
    "TIFF with 2048 samples per pixel": tiff_with_samples_per_pixel(2048),
}


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_files_are_one_line(case, trained, tmp_path, in_process, one_line_error):
    path = tmp_path / "crafted.img"
    path.write_bytes(CRAFTED[case])
    one_line_error(in_process(predict.main, [trained.pth, path]), "is not a readable image")


def image_bytes(mode, size, fmt, seed):
    """A random image of `mode` and `size` saved as `fmt`."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    bands = {"1": 1, "L": 1, "LA": 2, "P": 1, "I;16": 1, "I": 1, "F": 1, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}.get(mode, np.uint8)
    pixels = rng.integers(0, 255, (size[1], size[0], bands)).astype(dtype).squeeze(-1 if bands == 1 else ())
    img = Image.fromarray(pixels, mode) if bands > 1 else Image.fromarray(pixels).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


FORMATS_BY_MODE = {"PNG": ["1", "L", "LA", "P", "I;16", "RGB", "RGBA"], "TIFF": ["1", "L", "I;16", "I", "F", "RGB",
                   "RGBA", "CMYK"], "JPEG": ["L", "RGB", "CMYK"], "BMP": ["1", "L", "P", "RGB"], "GIF": ["L", "P"],
                   "WEBP": ["RGB", "RGBA"]}
images = st.sampled_from(sorted((f, m) for f, ms in FORMATS_BY_MODE.items() for m in ms)).flatmap(
    lambda fm: st.builds(image_bytes, st.just(fm[1]), st.tuples(st.integers(1, 80), st.integers(1, 80)),
                         st.just(fm[0]), st.integers(0, 2**32)))


def mutated(data):
    """The image's bytes truncated, with bytes flipped, or with random bytes spliced in."""
    return st.one_of(
        st.integers(0, len(data)).map(lambda n: data[:n]),
        st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1, max_size=8).map(
            lambda edits: bytes(v if i not in dict(edits) else dict(edits)[i] for i, v in enumerate(data))),
        st.tuples(st.integers(0, len(data)), st.binary(min_size=1, max_size=32)).map(
            lambda cut: data[:cut[0]] + cut[1] + data[cut[0]:]),
    )


@pytest.mark.parametrize("examples", [pytest.param(150, id="quick"),
                                      pytest.param(5000, id="long", marks=pytest.mark.slow)])
def test_fuzzed_image_files_give_a_digit_or_one_line(examples, tmp_path):
    """Random images of every mode, size and format, whole, truncated, bit-flipped or spliced, and random
    bytes: each becomes a 28x28 digit or a UserError, never another exception."""
    path = str(tmp_path / "fuzzed")

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.data_too_large])
    @given(st.one_of(images, images.flatmap(mutated), st.binary(max_size=256)))
    def check(data):
        with open(path, "wb") as f:
            f.write(data)
        try:
            digit = predict.to_mnist(predict.load_image(path), path)
        except cli.UserError as e:
            assert "\n" not in str(e)
        else:
            assert digit.shape == (1, 28, 28) and digit.dtype == torch.uint8

    check()

"""predict.py: the user's own images, through the CLI and its preprocessing."""
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import number_sets
import predict
from inference import probabilities
from plots import gray_png
from preprocess import prepare

HERE = os.path.dirname(os.path.abspath(__file__))


def as_photo(image_uint8, path, size=(180, 240), mode="RGB"):
    """Save an MNIST digit the way people have them: dark ink on light paper, larger, in colour."""
    from PIL import Image

    paper = (255 - image_uint8[0]).numpy()
    Image.fromarray(paper).resize(size, Image.BILINEAR).convert(mode).save(path)
    return path


@pytest.mark.slow  # 200 re-photographed digits end to end: seconds the default run cannot spare
def test_photos_of_digits_are_classified(trained, mnist_test, tmp_path):
    """200 test digits saved as dark-on-light RGB/JPEG/grayscale images of other sizes: the full
    predict path (load, invert, crop, rescale, centre) keeps accuracy high."""
    images, labels = mnist_test
    formats = [("RGB", ".png", (180, 240)), ("L", ".jpg", (90, 90)), ("RGBA", ".png", (56, 64))]
    prepared = []
    for i in range(200):
        mode, ext, size = formats[i % 3]
        path = as_photo(images[i], tmp_path / f"digit{i}{ext}", size, mode)
        prepared.append(prepare(path.read_bytes()))
    acc = 100 * (probabilities(trained.model, torch.stack(prepared)).argmax(1) == labels[:200]).float().mean()
    print(f"accuracy on 200 re-photographed test digits: {acc:.1f}%")
    assert acc >= 97.0


def test_predict_cli_prints_one_line_per_image(trained, mnist_test, tmp_path, in_process):
    # In-process: test_output_into_a_closed_pipe_is_quiet (under -m slow) runs predict.py as a script
    paths = [as_photo(mnist_test[0][i], tmp_path / f"d{i}.png") for i in range(3)]
    result = in_process(predict.main, [trained.pth, *paths, "--top", "3"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    for line, path, label in zip(lines, paths, mnist_test[1][:3].tolist(), strict=True):
        assert re.fullmatch(rf"{re.escape(str(path))}: \d \(\d+\.\d%\), \d \(\d+\.\d%\), \d \(\d+\.\d%\)", line)
        assert line.split(": ")[1].startswith(f"{int(label)} (")


def test_predict_without_sidecar_takes_model_flag(trained, mnist_test, tmp_path, in_process, one_line_error):
    pth = tmp_path / "bare.pth"
    shutil.copy(trained.pth, pth)
    path = as_photo(mnist_test[0][0], tmp_path / "d.png")
    one_line_error(in_process(predict.main, [pth, path]), "pass --model NAME")
    result = in_process(predict.main, [pth, path, "--model", trained.sidecar["model"]])
    assert result.returncode == 0 and result.stdout.startswith(f"{path}: {int(mnist_test[1][0])} (")


def test_image_in_the_checkpoints_place(trained, mnist_test, tmp_path, in_process, one_line_error):
    path = as_photo(mnist_test[0][0], tmp_path / "d.png")
    one_line_error(in_process(predict.main, [path, trained.pth]), "an image given in the checkpoint's place?")


def test_predict_evaluate(trained, tmp_path, data_dir, in_process):
    result = in_process(predict.main, [trained.pth, "--evaluate", "--out-dir", tmp_path, "--data-dir", data_dir])
    assert result.returncode == 0, result.stderr
    acc = float(re.search(r"MNIST test set accuracy: ([\d.]+)%", result.stdout).group(1))
    assert acc == pytest.approx(trained.sidecar["test_acc"], abs=0.01)
    assert len(re.findall(r"\d: [\d.]+%", result.stdout.split("per class:")[1].splitlines()[0])) == 10
    matrix = [line.split() for line in result.stdout.split("predicted):")[1].strip().splitlines()[1:11]]
    assert sum(int(c) for row in matrix for c in row[1:]) == 10_000
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # a fresh interpreter: torch's import alone is most of its time
def test_output_into_a_closed_pipe_is_quiet(trained, mnist_test, tmp_path):
    """`predict.py ... | head -1` after the reader has gone: exit 141 without a traceback."""
    image = as_photo(mnist_test[0][0], tmp_path / "d.png")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "predict.py"), trained.pth, image],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader goes away before the first line is written
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode == 141, stderr
    assert stderr == ""


def test_predict_refuses_bad_checkpoints(trained, mnist_test, tmp_path, corrupt_checkpoints, in_process,
                                         one_line_error):
    image = as_photo(mnist_test[0][0], tmp_path / "d.png")
    for _, pth, flags, needle in corrupt_checkpoints:
        one_line_error(in_process(predict.main, [pth, image, *flags]), needle)


def test_predict_refuses_bad_images(trained, mnist_test, tmp_path, in_process, one_line_error):
    from PIL import Image

    good = as_photo(mnist_test[0][0], tmp_path / "good.png")
    (tmp_path / "notes.png").write_text("not an image")
    Image.new("RGB", (64, 64), "white").save(tmp_path / "white.png")
    Image.new("L", (64, 64), 0).save(tmp_path / "black.png")
    (tmp_path / "empty.png").write_bytes(b"")
    Image.fromarray((torch.rand(64, 64, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy()) \
        .save(tmp_path / "noise.png")
    for bad, needle in (("notes.png", "is not a readable image"), ("white.png", "no digit found"),
                        ("black.png", "no digit found"), ("empty.png", "is not a readable image"),
                        ("noise.png", "no digit found"), ("missing.png", "not found")):
        # the good image first: nothing is printed for it when a later one is bad
        one_line_error(in_process(predict.main, [trained.pth, good, tmp_path / bad]), needle)


# ---------------------------------------------------------------- damaged input, fuzzed input

def test_predict_refuses_nan_weights(trained, mnist_test, tmp_path, in_process, one_line_error):
    state = {k: v.clone() for k, v in trained.model.state_dict().items()}
    next(iter(state.values())).view(-1)[0] = float("nan")
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




# ---------------------------------------------------------------- the user's own images

def test_options_anywhere_on_the_line(trained, mnist_test, tmp_path, in_process):
    paths = [as_photo(mnist_test[0][i], tmp_path / f"d{i}.png") for i in range(2)]
    result = in_process(predict.main, [trained.pth, "--top", "3", *paths])
    assert result.returncode == 0, result.stderr
    assert [line.count("%") for line in result.stdout.splitlines()] == [3, 3]


def test_show_writes_what_the_model_saw(trained, mnist_test, tmp_path, in_process):
    from PIL import Image

    (tmp_path / "other").mkdir()
    a = as_photo(mnist_test[0][0], tmp_path / "digit.png")
    b = as_photo(mnist_test[0][1], tmp_path / "other" / "digit.png")
    shown = tmp_path / "shown"
    result = in_process(predict.main, [trained.pth, a, b, "--show", shown])
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(shown)) == ["digit_1_28x28.png", "digit_28x28.png"]  # the second one kept apart
    for path, name in ((a, "digit_28x28.png"), (b, "digit_1_28x28.png")):
        seen = torch.frombuffer(bytearray(Image.open(shown / name).tobytes()), dtype=torch.uint8).view(1, 28, 28)
        assert torch.equal(seen, prepare(path.read_bytes()))


def test_low_confidence_is_flagged_after_the_usual_line(monkeypatch, trained, mnist_test, tmp_path, in_process):
    import inference

    path = as_photo(mnist_test[0][0], tmp_path / "d.png")
    for top, flagged in ((inference.LOW_CONFIDENCE - 0.01, True), (0.95, False)):
        probs = torch.full((1, 10), (1 - top) / 9)
        probs[0, 3] = top
        monkeypatch.setattr(predict, "probabilities", lambda model, digits, p=probs: p)
        line = in_process(predict.main, [trained.pth, path, "--top", "2"]).stdout.strip()
        assert re.fullmatch(rf"{re.escape(str(path))}: 3 \(\d+\.\d%\), \d \(\d+\.\d%\)( \[low confidence\])?", line)
        assert line.endswith(" [low confidence]") == flagged


def labelled_folder(root, mnist_test):
    """A user's folder: labels from parent folders, from label<d> and from a leading digit; plus a note
    without a label, a file that is no image, and a blank page."""
    from PIL import Image

    images, labels = mnist_test
    (root / "3").mkdir(parents=True)
    (root / "mixed").mkdir()
    picks = {label: i for i, label in enumerate(labels[:100].tolist())}
    as_photo(images[picks[3]], root / "3" / "photo.png")
    as_photo(images[picks[7]], root / "mixed" / "img_label7.png")
    as_photo(images[picks[5]], root / "mixed" / "5_scan.jpg")
    (root / "mixed" / "notes.txt").write_text("no label here")
    (root / "mixed" / "4_broken.png").write_text("not an image")
    Image.new("L", (60, 60), 255).save(root / "2_blank.png")
    return root


def test_evaluate_a_folder_of_own_images(trained, mnist_test, tmp_path, in_process):
    folder = labelled_folder(tmp_path / "mine", mnist_test)
    out = tmp_path / "report"
    result = in_process(predict.main, [trained.pth, "--evaluate", folder, "--out-dir", out])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (f"4 labelled images under {folder}; 1 with no digit found (counted as wrong); "
                        "left out: 1 unreadable, 1 without a label")
    assert lines[1] == "mine accuracy: 75.00% (1 of 4 wrong)"
    assert re.match(r"per class: 0: -  1: -  2: 0\.00%  3: 100\.00%", lines[2])
    assert "-: no digit found" in lines[3]
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "misses.png").read_bytes()[:4] == b"\x89PNG"
    assert f"saved {out / 'misses.png'} (the first 1 misses" in result.stdout


def test_evaluate_refuses_a_path_that_is_no_folder(trained, tmp_path, in_process, one_line_error):
    one_line_error(in_process(predict.main, [trained.pth, "--evaluate", tmp_path / "nothing"]), "is not a folder")
    (tmp_path / "empty").mkdir()
    one_line_error(in_process(predict.main, [trained.pth, "--evaluate", tmp_path / "empty", "--out-dir", tmp_path]),
                   "no labelled image under")


def test_an_empty_evaluate_path_is_no_folder(trained, in_process, one_line_error):
    """--evaluate alone is the MNIST test set; an empty DIR, as a script's unset variable gives it, is not."""
    assert predict.parse_args([trained.pth, "--evaluate"]).evaluate is predict.MNIST_TEST_SET
    one_line_error(in_process(predict.main, [trained.pth, "--evaluate", ""]), "'' is not a folder")


# ---------------------------------------------------------------- numbers

def number_file(path, mnist_test, indices, rng_seed=0):
    """MNIST test digits written apart in a row (number_sets.apart), dark on white, as a PNG at `path`;
    returns the number's label."""
    images, labels = mnist_test
    rng = np.random.default_rng(rng_seed)
    mask = number_sets.apart([images[i, 0].numpy().astype(np.float32) / 255 for i in indices], rng)
    path.write_bytes(gray_png(((1 - np.pad(mask, 20)) * 255).round().astype(np.uint8)))
    return "".join(str(int(labels[i])) for i in indices)


def test_number_lines_and_the_several_digits_suffix(trained, mnist_test, tmp_path, in_process):
    number = tmp_path / "row.png"
    label = number_file(number, mnist_test, [0, 1, 2, 3])
    single = tmp_path / "one.png"
    single.write_bytes(gray_png(255 - mnist_test[0][0, 0].numpy()))
    result = in_process(predict.main, [trained.pth, "--number", number, single, "--show", tmp_path / "seen"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    match = re.fullmatch(re.escape(f"{number}: ") + r"(\d+) \(((\d) \d+\.\d%(, )?)+\)( \[low confidence\])?", lines[0])
    assert match and match.group(1) == label, lines[0]
    assert [d.split()[0] for d in lines[0].split("(")[1].rstrip(")").split(", ")][:4] == list(label)
    assert re.fullmatch(re.escape(f"{single}: ") + r"7 \(7 \d+\.\d%\)( \[low confidence\])?", lines[1])
    assert Image.open(tmp_path / "seen" / "row_28x28.png").size == (28 * 4, 28)

    result = in_process(predict.main, [trained.pth, number, single])
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{number}: ") and lines[0].endswith(predict.SEVERAL)
    assert lines[1].startswith(f"{single}: 7 (") and predict.SEVERAL not in lines[1]


def test_number_flags_that_do_not_go_together(trained, tmp_path, in_process, one_line_error):
    one_line_error(in_process(predict.main, [trained.pth, "--number", "--top", "3", tmp_path / "x.png"]),
                   "--top lists one digit's alternatives")
    one_line_error(in_process(predict.main, [trained.pth, "--number", "--evaluate"]), "--number --evaluate DIR")


def test_evaluate_a_folder_of_numbers(trained, mnist_test, tmp_path, in_process):
    folder = tmp_path / "numbers"
    (folder / "4012").mkdir(parents=True)
    first = number_file(folder / "x.png", mnist_test, [0, 1, 2])  # 721: the label from the file name ...
    (folder / "x.png").rename(folder / f"{first}_a.png")
    number_file(folder / "4012" / "photo.png", mnist_test, [4, 3, 1, 2])  # ... or the folder's (4012: it is 4021)
    (folder / "555_damaged.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "report"
    result = in_process(predict.main, [trained.pth, "--number", "--evaluate", folder, "--out-dir", out])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"2 labelled numbers (7 digits) under {folder}; left out: 1 unreadable, 1 without a label"
    assert lines[1] == "whole-number accuracy: 50.00% (1 of 2 wrong)"
    assert lines[2].startswith("per-digit accuracy: 71.43% ")  # 4012 for 4021: two edits of 7 digits
    assert (out / "misses.png").read_bytes()[:4] == b"\x89PNG"


def test_number_accuracy_counts_edits():
    assert predict.number_accuracy(["123", "45", "6789"], ["123", "475", "6089"]) == (100 / 3, 100 * 8 / 10)
    assert predict.edit_distance("", "12") == 2 and predict.edit_distance("1234", "1324") == 2

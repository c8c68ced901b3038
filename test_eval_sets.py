"""eval_sets.py: the evaluation sets are generated as described, reproducibly, and scored."""
import json
import os

import numpy as np
import pytest

import eval_sets


def test_a_photograph_is_a_jpeg_of_ink_on_paper():
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    mask = np.zeros((28, 20), np.float32)
    mask[4:24, 8:12] = 1  # a "1"
    img = Image.open(io.BytesIO(eval_sets.photograph(mask, rng, size=400)))
    assert img.format == "JPEG" and 400 in img.size
    gray = np.asarray(img.convert("L"), np.float32)
    assert gray.min() < 0.6 * np.median(gray)  # some ink, darker than the paper


def test_the_same_seed_gives_the_same_images():
    mask = np.ones((20, 10), np.float32)
    a = eval_sets.photograph(mask, np.random.default_rng(5))
    b = eval_sets.photograph(mask, np.random.default_rng(5))
    assert a == b and a != eval_sets.photograph(mask, np.random.default_rng(6))


def test_a_pen_is_sized_to_the_digit_not_to_the_whole_mask():
    line = np.zeros((400, 100), np.float32)
    line[:, 40:60] = 1  # a 20-pixel stroke in a mask twice a digit's height (a number on a sloping line)
    widths = {pen: [int((eval_sets.resized(line, 400, np.random.default_rng(seed), pen=pen) > 0.5).sum(1).max())
                    for seed in range(12)] for pen in (None, 200)}
    assert min(widths[200]) >= 8  # a thin pen on a 200-pixel digit leaves the stroke half its width
    assert min(widths[None]) == 0  # sized to the whole 400 pixels, it wipes the stroke out


def test_boxed_glyphs_are_told_apart():
    glyph = np.zeros((30, 20), np.float32)
    glyph[5:25, 8:12] = 1
    assert not eval_sets.framed(glyph)
    boxed = glyph.copy()
    boxed[[1, -2], :] = boxed[:, [1, -2]] = 1
    assert eval_sets.framed(boxed)


@pytest.mark.slow  # it draws every installed font's digits: seconds the default suite cannot spare
def test_installed_digit_fonts_draw_digits():
    fonts = eval_sets.digit_fonts()
    if not fonts:
        pytest.skip("no TrueType/OpenType font installed (apt-get install fonts-dejavu-core)")
    glyph = eval_sets.glyph(fonts[0], "7", 60, np.random.default_rng(0))
    assert 40 <= glyph.shape[0] <= 90 and glyph.max() > 0.9


def test_fonts_the_model_trains_on_are_scored_apart():
    """Every font train.py draws printed digits in is of a TRAINED_FAMILY, so "fonts" holds unseen ones."""
    import data

    assert all(eval_sets.trained_family(path) for path in data.matplotlib_fonts())
    assert eval_sets.trained_family("/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf")
    assert not eval_sets.trained_family("/usr/share/fonts/truetype/roboto/Roboto-Regular.ttf")


@pytest.fixture(scope="module")
def halves(trained, tmp_path_factory, data_dir, script):
    """Both halves written once for the tests below: dev in this process, test by the script in a fresh
    process that also scores the session's model on it (with --json), as a user runs it."""
    if not eval_sets.digit_fonts():
        pytest.skip("no TrueType/OpenType font installed (apt-get install fonts-dejavu-core)")
    root = tmp_path_factory.mktemp("eval_sets")
    eval_sets.main(["--out", str(root / "dev"), "--half", "dev", "--photos", "10", "--data-dir", data_dir])
    result = script("eval_sets.py", "--out", root / "test", "--half", "test", "--photos", 40, "--checkpoint",
                    trained.pth, "--data-dir", data_dir, "--json", root / "scores.json")
    assert result.returncode == 0, result.stderr
    return root, result


@pytest.mark.slow
def test_sets_are_written_and_scored(halves, trained, in_process):
    root, result = halves
    out, scores = root / "test", root / "scores.json"
    photo_dirs = os.listdir(out / "photo")
    assert set(photo_dirs) <= set("0123456789")  # labelled by folder, as --evaluate reads them
    assert sum(len(os.listdir(out / "photo" / d)) for d in photo_dirs) == 40
    assert sum(len(f) for _, _, f in os.walk(out / "mnist_png")) == 5_000
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line[:1].isalpha()}
    assert float(rows["mnist_png"][2].rstrip("%")) >= 99.0
    assert float(rows["photo"][2].rstrip("%")) >= 80.0
    assert "non-digits, letters" in result.stdout
    fonts = eval_sets.digit_fonts()[1::2]  # the test half's
    assert "fonts_trained" in rows or not any(eval_sets.trained_family(p) for p in fonts)
    written = json.loads(scores.read_text(encoding="utf-8"))  # --json holds what the table printed
    assert {s["name"]: f"{s['accuracy']:.2f}%" for s in written["sets"]} == {n: r[2] for n, r in rows.items()
                                                                          if n in eval_sets.SETS}
    assert written["half"] == "test" and written["command"].startswith("python eval_sets.py")
    assert written["checkpoint"]["test_acc"] == trained.sidecar["test_acc"]
    rescored = in_process(eval_sets.main, ["--score", out, "--checkpoint", trained.pth, "--sets", "photo,nondigits",
                                           "--thresholds", "0.3,0.99"])
    assert rescored.returncode == 0, rescored.stderr
    (photo,) = [line.split() for line in rescored.stdout.splitlines() if line.startswith("photo ")]
    assert photo[:3] == rows["photo"][:3]  # the same images and accuracy, the sets not written again
    low, high = [line for line in rescored.stdout.splitlines() if line.startswith("at 0.")]
    share = [float(line.split("photo ")[1].split("%")[0]) for line in (low, high)]
    assert share[0] <= share[1] and "mnist_png" not in rescored.stdout


@pytest.mark.slow
def test_the_two_halves_share_no_source(halves):
    """dev and test each hold half of the MNIST test digits, fonts and handwriting, none of the other's, and
    photos drawn from their own random stream."""
    root, _ = halves
    files = {half: {name: {f for _, _, fs in os.walk(root / half / name) for f in fs}
                    for name in ("mnist_png", "fonts", "handwriting")} for half in eval_sets.HALVES}
    dev, test = files["dev"], files["test"]
    assert len(dev["mnist_png"]) == len(test["mnist_png"]) == 5_000
    for name in dev:
        assert dev[name] and not dev[name] & test[name], name
    photos = [(root / half / "photo").rglob("*.jpg") for half in eval_sets.HALVES]
    assert {p.read_bytes() for p in photos[0]}.isdisjoint(p.read_bytes() for p in photos[1])


def test_markdown_table_from_scores(tmp_path, in_process):
    scores = {"low_confidence": 0.6,
              "sets": [{"name": "photo", "images": 2400, "wrong": 73, "accuracy": 96.96, "flagged": 6.33,
                        "no_digit": 4}],
              "nondigits": [{"kind": "letter", "images": 96, "caught": 62.5}]}
    path = tmp_path / "eval_sets.json"
    path.write_text(json.dumps(scores), encoding="utf-8")
    out = in_process(eval_sets.main, ["--markdown", path]).stdout.splitlines()
    assert out[0] == "| set | what | images | accuracy | flagged low confidence | no digit found |"
    assert out[2] == f"| `photo` | {eval_sets.SETS['photo']} | 2,400 | 96.96% (73 wrong) | 6.33% | 4 |"
    assert out[-1].endswith("letters 62.5% (of 96).") and "under 0.6" in out[-1]


@pytest.mark.parametrize("args, needle", [
    ([], "--out DIR is needed"),
    (["--score", "sets"], "--score DIR scores a checkpoint: give --checkpoint"),
    (["--score", "sets", "--checkpoint", "ck.pth"], "--score 'sets' is not a folder"),
    (["--out", "sets", "--sets", "photo,selfies"], "--sets: no set 'selfies'"),
    (["--out", "sets", "--thresholds", "0.5,high"], "--thresholds '0.5,high': give numbers"),
    (["--out", "sets", "--json", "s.json"], "--json writes scores: give --checkpoint"),
])
def test_flags_that_need_each_other(args, needle, tmp_path, in_process, one_line_error, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(in_process(eval_sets.main, args), needle)
    assert not os.listdir(tmp_path)  # nothing written

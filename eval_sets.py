"""Digits that are not MNIST's own files, to measure predict.py on: generated reproducibly, then scored.

    python eval_sets.py --out evalsets                        # write the sets (seed 0; 8 minutes, 250 MB)
    python eval_sets.py --out dev --half dev                  # half of each, to make choices on (test: to report)
    python eval_sets.py --out evalsets --checkpoint CK.pth --json eval_sets.json   # ... and score a checkpoint
    python eval_sets.py --markdown eval_sets.json             # the README's table of those scores
    python predict.py CK.pth --evaluate evalsets/photo        # or one set, with its confusion matrix

Sets (each image in <set>/<label>/, as predict.py --evaluate DIR reads them):
  photo        2,400 photo-like JPEGs: MNIST *test* digits and font digits as ink on paper (white,
               grey, tinted or lined), at varied scale, position and rotation, with thin pen to thick
               marker, lighting gradients, vignetting, soft shadows, blur, sensor noise and JPEG
  fonts        each digit of every installed TrueType/OpenType font whose digits are digits (not
               pictures, not boxed: see digit_fonts), at varied size and position, dark on white,
               except the families train.py's printed digits are drawn in (TRAINED_FAMILIES) ...
  fonts_trained  ... which are here: the score on fonts the model has seen
  handwriting  scikit-learn's 1,797 UCI handwritten digits (43 writers, not MNIST's), as the 8x8
               images they are stored as; left out when scikit-learn is not installed
  mnist_png    the 10,000 MNIST test digits as PNG files: reading from a file must not cost accuracy
  nondigits    letters that look like no digit, shapes, and blank paper with a shadow, photographed
               like the digits (no label: they measure the low-confidence flag)
"""
import glob
import io
import json
import math
import os
import time

import numpy as np

import cli

PHOTOS = 2400
# A half of every set: its own MNIST test digits, fonts and handwriting (alternate ones of each) and its own
# random stream. Choices (thresholds, recipes) are made on dev; figures are reported on test.
HALVES = ("dev", "test")
NONDIGIT_LETTERS = "ACEFHKMNPRUVWXYacdefhkmnprtuvwxy"  # letters no one would take for a digit
SHAPES = ("square", "triangle", "star", "smiley", "cross", "heart", "arrow", "spiral")
PAPERS = {"white": (246, 246, 242), "grey": (196, 196, 192), "cream": (245, 236, 200), "blue": (222, 232, 246),
          "green": (226, 242, 222), "pink": (246, 226, 232)}
# The families of data.PRINTED_FONTS (matplotlib's DejaVu, STIX and Computer Modern), which train.py
# draws printed digits in: kept out of "fonts" and the photos, so that those measure unseen fonts.
TRAINED_FAMILIES = ("DejaVu", "STIX", "cm", "lm")  # lm: Latin Modern, Computer Modern's successor
INKS = {"black": (20, 20, 24), "blue": (28, 42, 140), "dark blue": (16, 24, 70), "red": (150, 24, 30),
        "pencil": (90, 90, 96), "green": (20, 90, 40)}


# What each scored set holds, as the README's table says it.
SETS = {"mnist_png": "MNIST's test digits as PNG files, through predict.py's path",
        "photo": "MNIST test digits and unseen fonts as ink on paper: gradients, shadows, lined or tinted "
                 "paper, blur, noise, JPEG, 320-1600 px",
        "fonts": "each digit of every installed font but the families training draws in",
        "fonts_trained": "the fonts of the families training draws in (DejaVu, STIX)",
        "handwriting": "real handwriting not from MNIST: the UCI digits (43 writers, 8x8 scans) in scikit-learn"}


def build_parser():
    p = cli.parser(__doc__)
    p.add_argument("--out", metavar="DIR", help="a new folder for the sets (about 250 MB); needed unless --markdown")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same images")
    p.add_argument("--photos", type=int, metavar="N",
                   help=f"how many photo-like images (default: {PHOTOS}, or {PHOTOS // 2} with --half)")
    p.add_argument("--half", choices=HALVES,
                   help="write only this half of every set (default: the whole sets); with --score, the half DIR holds")
    p.add_argument("--sets", metavar="LIST", help=f"with --score: only these, from {', '.join(SETS)}, nondigits")
    p.add_argument("--thresholds", metavar="LIST", default="",
                   help="also print what each of these low-confidence thresholds would flag (e.g. 0.5,0.6,0.7)")
    add_scoring_flags(p)
    return p


def add_scoring_flags(p):
    """The flags this script and number_sets.py share for scoring written sets (check_scoring_flags checks them)."""
    p.add_argument("--checkpoint", help="score this model_mnist_*.pth on every set once they are written")
    p.add_argument("--score", metavar="DIR", help="score --checkpoint on the sets already written under DIR instead")
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON (with --checkpoint)")
    p.add_argument("--markdown", metavar="JSON", help="print the README's table of a --json file's scores and exit")
    cli.add_data_dir(p, "MNIST root (the test digits)")


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    if args.markdown:
        return args
    check_scoring_flags(args)
    if not args.out and not args.score:
        raise cli.UserError("--out DIR is needed: a new folder for the sets (or --markdown JSON for a table)")
    args.sets = args.sets and [n.strip() for n in args.sets.split(",") if n.strip()]
    unknown = [n for n in args.sets or [] if n not in (*SETS, "nondigits")]
    if unknown:
        raise cli.UserError(f"--sets: no set {unknown[0]!r}: use {', '.join(SETS)} or nondigits")
    try:
        args.thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
    except ValueError:
        raise cli.UserError(f"--thresholds {args.thresholds!r}: give numbers, e.g. 0.5,0.6,0.7") from None
    args.photos = args.photos or (PHOTOS // 2 if args.half else PHOTOS)
    cli.check_range("--photos", args.photos, 10, 100_000)
    return args


def check_scoring_flags(args):
    """What this script and number_sets.py check alike: scoring and --json need a checkpoint, --json a file
    that can be written, --seed a seed numpy takes."""
    if args.score and not args.checkpoint:
        raise cli.UserError("--score DIR scores a checkpoint: give --checkpoint CK.pth too")
    if args.json and not args.checkpoint:
        raise cli.UserError("--json writes scores: give --checkpoint CK.pth too")
    if args.json:
        cli.check_out_file(args.json, "--json")
    cli.check_range("--seed", args.seed, 0, 2**32 - 1)


# ---------------------------------------------------------------- fonts

def digit_fonts():
    """Every installed font file (.ttf, .otf, .ttc) whose ten digits are digits: all ten drawn, as distinct
    glyphs, in a digit's proportions (clearly taller than wide: dingbat fonts put pictures there) and
    not each inside a box (keyboard-key and inverted OCR fonts draw them so; a square 0 alone is fine)."""
    from PIL import ImageFont

    found = []
    for path in sorted(set(glob.glob("/usr/share/fonts/**/*.[ot]t[fc]", recursive=True) +
                           glob.glob(os.path.expanduser("~/.fonts/**/*.[ot]t[fc]"), recursive=True))):
        try:
            font = ImageFont.truetype(path, 48)
            masks = [font.getmask(c) for c in "0123456789\U0010fffd"]
        except OSError:
            continue
        glyphs = [crop(np.asarray(m, np.float32).reshape(m.size[1], m.size[0]) / 255) if m.size[0] * m.size[1] else
                  np.zeros((0, 0), np.float32) for m in masks]
        if (len({g.tobytes() for g in glyphs}) == 11 and all(g.size and g.max() > 0.25 for g in glyphs[:10]) and
                np.median([g.shape[0] / g.shape[1] for g in glyphs[:10]]) >= 1.15 and
                sum(framed(g) for g in glyphs[:10]) < 5):
            found.append(path)
    return found


def framed(glyph):
    """Whether the glyph has a box drawn round it: its four sides (one pixel in, past the antialiasing) ink."""
    if min(glyph.shape) <= 4:
        return False
    return all((side > 0.5).mean() > 0.7 for side in (glyph[1], glyph[-2], glyph[:, 1], glyph[:, -2]))


def trained_family(font_path):
    """Whether train.py's printed digits are drawn in this font's family."""
    return os.path.basename(font_path).startswith(TRAINED_FAMILIES)


def glyph(font_path, text, height, rng):
    """The text's ink as a float mask (h, w) in [0, 1], about `height` pixels tall."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_path, max(8, int(height * 1.35)))
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(img).text((4 - left, 4 - top), text, fill=255, font=font)
    return crop(np.asarray(img, dtype=np.float32) / 255)


def crop(mask):
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    return mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] if len(rows) else mask


# ---------------------------------------------------------------- photo-like compositing

def resized(mask, height, rng, pen=None):
    """The mask scaled to `height` pixels tall (smoothly), its strokes made thinner or thicker (thin pen to
    thick marker, sized to a digit `pen` pixels tall: by default the mask's height) and rotated up to 12
    degrees."""
    from PIL import Image, ImageFilter

    img = Image.fromarray((mask * 255).astype(np.uint8))
    width = max(1, round(mask.shape[1] * height / mask.shape[0]))
    img = img.resize((width, height), Image.BICUBIC)
    stroke = rng.choice(["thin", "as is", "as is", "thick"])
    size = max(3, (int(pen or height) // 40) * 2 + 1)
    if stroke == "thin":
        img = img.filter(ImageFilter.MinFilter(size))
    elif stroke == "thick":
        img = img.filter(ImageFilter.MaxFilter(size))
    img = img.rotate(rng.uniform(-12, 12), Image.BICUBIC, expand=True)
    return crop(np.asarray(img, dtype=np.float32) / 255)


def paper(h, w, rng):
    """A sheet (h, w, 3) in [0, 1]: a paper colour, faint texture, and ruled lines on a third of them."""
    colour = np.array(PAPERS[rng.choice(list(PAPERS))], dtype=np.float32) / 255
    sheet = np.ones((h, w, 3), np.float32) * colour
    texture = rng.normal(0, 0.015, (h // 8 + 1, w // 8 + 1)).repeat(8, 0).repeat(8, 1)[:h, :w]
    sheet *= (1 + texture)[..., None]
    if rng.random() < 0.33:
        gap = int(h * rng.uniform(0.06, 0.12))
        line = np.array([150, 175, 225], np.float32) / 255
        for y in range(int(rng.integers(0, gap)), h, gap):
            sheet[y:y + max(1, h // 400)] = line
    return sheet


def lighting(h, w, rng):
    """A multiplicative light field (h, w): a gradient, vignetting and, on most, a soft shadow."""
    from PIL import Image, ImageFilter

    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ys, xs = ys / h - 0.5, xs / w - 0.5
    angle = rng.uniform(0, 2 * math.pi)
    light = 1 - rng.uniform(0, 0.45) * (0.5 + math.cos(angle) * xs + math.sin(angle) * ys)
    light *= 1 - rng.uniform(0, 0.35) * (xs ** 2 + ys ** 2) * 2
    if rng.random() < 0.7:  # a soft shadow: a hand, a phone, the photographer
        shadow = Image.new("L", (w, h), 0)
        cx, cy = rng.uniform(-0.2, 1.2) * w, rng.uniform(-0.2, 1.2) * h
        r = rng.uniform(0.3, 0.9) * max(h, w)
        from PIL import ImageDraw
        if rng.random() < 0.5:
            ImageDraw.Draw(shadow).ellipse((cx - r, cy - r * 0.6, cx + r, cy + r * 0.6), fill=255)
        else:
            a = rng.uniform(0, 2 * math.pi)
            far = 3 * max(h, w)
            ImageDraw.Draw(shadow).polygon([(cx + far * math.cos(a + t), cy + far * math.sin(a + t))
                                            for t in (-1.6, 0, 1.6)] + [(cx, cy)], fill=255)
        shadow = shadow.filter(ImageFilter.GaussianBlur(rng.uniform(0.01, 0.08) * max(h, w)))
        light *= 1 - rng.uniform(0.25, 0.6) * np.asarray(shadow, np.float32) / 255
    return light


def photograph(mask, rng, size=None, across=None, line=1.0):
    """A JPEG (bytes) of `mask` as ink on paper, photographed with all that goes with it. `across`: the share
    of a landscape sheet's width the mask spans, drawn from that range (a number, framed as people frame one);
    by default its height is 12-60% of the sheet's shorter side, either way up. `line`: the share of the
    mask's height one digit takes (a number on a sloping line), so that a pen is as thick for its digits as
    for a digit photographed alone."""
    from PIL import Image, ImageFilter

    w = size or int(rng.integers(320, 1600))
    h = int(w * rng.uniform(0.6, 1.0))
    if across is None and rng.random() < 0.5:
        h, w = w, h
    sheet = paper(h, w, rng)
    if mask is not None:
        height = max(12, int(min(h, w) * rng.uniform(0.12, 0.6)) if across is None else
                     int(w * rng.uniform(*across) * mask.shape[0] / mask.shape[1]))
        digit = resized(mask, height, rng, pen=height * line)
        fit = min((h - 2) / digit.shape[0], (w - 2) / digit.shape[1])
        if fit < 1:  # a number wider than the sheet (number_sets.py): written smaller
            height = max(12, int(height * fit * 0.9))
            digit = resized(mask, height, rng, pen=height * line)
        dh, dw = digit.shape
        dh, dw = min(dh, h - 2), min(dw, w - 2)
        top, left = int(rng.integers(1, h - dh)), int(rng.integers(1, w - dw))
        alpha = digit[:dh, :dw, None] * rng.uniform(0.65, 1.0)
        ink = np.array(INKS[rng.choice(list(INKS))], np.float32) / 255
        region = sheet[top:top + dh, left:left + dw]
        sheet[top:top + dh, left:left + dw] = region * (1 - alpha) + ink * alpha
    sheet *= lighting(h, w, rng)[..., None]
    img = Image.fromarray((sheet.clip(0, 1) * 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.6) * max(1, min(h, w) / 500)))
    noisy = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(0, 10), (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=int(rng.integers(40, 95)))
    return buf.getvalue()


def shape(kind, rng):
    """A drawn shape's ink as a float mask, about 200 pixels tall."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (220, 220), 0)
    d, width = ImageDraw.Draw(img), int(rng.integers(6, 18))
    if kind == "square":
        d.rectangle((30, 30, 190, 190), outline=255, width=width)
    elif kind == "triangle":
        d.polygon([(110, 20), (200, 190), (20, 190)], outline=255, width=width)
    elif kind == "star":
        points = [(110 + 95 * math.cos(math.pi / 2 + i * 4 * math.pi / 5), 110 - 95 * math.sin(math.pi / 2 + i * 4 *
                                                                                                 math.pi / 5))
                  for i in range(5)]
        d.line(points + [points[0]], fill=255, width=width)
    elif kind == "smiley":
        d.ellipse((20, 20, 200, 200), outline=255, width=width)
        d.ellipse((70, 70, 90, 95), fill=255)
        d.ellipse((130, 70, 150, 95), fill=255)
        d.arc((60, 80, 160, 165), 20, 160, fill=255, width=width)
    elif kind == "cross":
        d.line((40, 40, 180, 180), fill=255, width=width)
        d.line((180, 40, 40, 180), fill=255, width=width)
    elif kind == "heart":
        d.ellipse((25, 40, 115, 120), outline=255, width=width)
        d.ellipse((105, 40, 195, 120), outline=255, width=width)
        d.line([(32, 100), (110, 195), (188, 100)], fill=255, width=width)
    elif kind == "arrow":
        d.line((20, 110, 190, 110), fill=255, width=width)
        d.line([(140, 60), (195, 110), (140, 160)], fill=255, width=width)
    else:  # spiral
        points = [(110 + t * 3 * math.cos(t / 4), 110 + t * 3 * math.sin(t / 4)) for t in range(0, 34)]
        d.line(points, fill=255, width=width)
    return crop(np.asarray(img, np.float32) / 255)


# ---------------------------------------------------------------- writing the sets

def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_sets(out, seed, photos, data_dir, half=None):
    """Write every set under `out` (or the HALVES `half` of each); returns {set name: number of images}."""
    from data import load_mnist
    from plots import gray_png

    part = slice(None) if half is None else slice(HALVES.index(half), None, 2)
    rng = np.random.default_rng(seed if half is None else [seed, HALVES.index(half)])
    counts = {}
    test_x, test_y = load_mnist(data_dir, "test", "cpu")
    fonts = digit_fonts()[part]
    if not fonts:
        raise cli.UserError("no TrueType/OpenType font with digits is installed: install a font package "
                            "(e.g. apt-get install fonts-dejavu-core)")

    mnist = np.arange(len(test_y))[part]
    for i in mnist.tolist():
        write(os.path.join(out, "mnist_png", str(int(test_y[i])), f"{i:05d}.png"), gray_png(test_x[i, 0].numpy()))
    counts["mnist_png"] = len(mnist)

    unseen = [path for path in fonts if not trained_family(path)] or fonts
    picks = mnist[rng.permutation(len(mnist))]
    for i in range(photos):
        if i % 2 == 0:  # half MNIST test digits, half font digits
            index = int(picks[i // 2])
            label, mask = int(test_y[index]), test_x[index, 0].numpy().astype(np.float32) / 255
        else:
            label = int(rng.integers(0, 10))
            mask = glyph(unseen[int(rng.integers(len(unseen)))], str(label), 160, rng)
        write(os.path.join(out, "photo", str(label), f"{i:05d}.jpg"), photograph(mask, rng))
    counts["photo"] = photos

    counts["fonts"] = counts["fonts_trained"] = 0
    for f, path in enumerate(fonts):
        folder = "fonts_trained" if trained_family(path) else "fonts"
        for label in range(10):
            size = int(rng.integers(16, 160))
            mask = glyph(path, str(label), size, rng)
            h, w = mask.shape
            canvas = np.zeros((h + int(rng.integers(4, 3 * h)), w + int(rng.integers(4, 3 * h))), np.float32)
            top, left = int(rng.integers(0, canvas.shape[0] - h + 1)), int(rng.integers(0, canvas.shape[1] - w + 1))
            canvas[top:top + h, left:left + w] = mask
            write(os.path.join(out, folder, str(label), f"{f:04d}_{os.path.basename(path)}.png"),
                  gray_png(((1 - canvas) * 255).astype(np.uint8)))
            counts[folder] += 1

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("handwriting: left out (pip install scikit-learn to include it)")
    else:
        digits = load_digits()
        mine = np.arange(len(digits.target))[part].tolist()
        for i in mine:
            write(os.path.join(out, "handwriting", str(digits.target[i]), f"{i:04d}.png"),
                  gray_png((digits.images[i] / 16 * 255).round().astype(np.uint8)))
        counts["handwriting"] = len(mine)

    n = 0
    for letter in NONDIGIT_LETTERS:
        for k in range(3):
            mask = glyph(fonts[int(rng.integers(len(fonts)))], letter, 160, rng)
            write(os.path.join(out, "nondigits", f"letter_{letter}_{k}.jpg"), photograph(mask, rng))
            n += 1
    for kind in SHAPES:
        for k in range(6):
            write(os.path.join(out, "nondigits", f"shape_{kind}_{k}.jpg"), photograph(shape(kind, rng), rng))
            n += 1
    for k in range(24):
        write(os.path.join(out, "nondigits", f"blank_{k}.jpg"), photograph(None, rng))
        n += 1
    counts["nondigits"] = n
    return counts


# ---------------------------------------------------------------- scoring

def answers_for(model, paths):
    """(top probability, predicted digit) for each image file, (0, -1) where no digit was found."""
    from predict import answers
    from preprocess import prepare

    def prepared(path):
        try:
            return prepare(cli.read_file(path, "image"), path)
        except cli.UserError:
            return None

    return answers(model, [prepared(path) for path in paths])


def score(checkpoint, out, names=None, thresholds=()):
    """Accuracy and low-confidence flags of a checkpoint on the sets under `out` (`names`, default every
    one there): printed as a table and returned as {"sets": [...], "nondigits": [...], "checkpoint": {...}}
    (what --json writes). Each of `thresholds` gets a line too: what it would flag, for calibrating
    inference.LOW_CONFIDENCE."""
    from checkpoint import load_checkpoint
    from inference import LOW_CONFIDENCE

    model, sidecar = load_checkpoint(checkpoint)
    answers = set_answers(model, out, names or [*SETS, "nondigits"])
    result = {"checkpoint": {"file": os.path.basename(checkpoint),
                             **{k: sidecar.get(k) for k in ("model", "seed", "test_acc", "git_commit")}},
              "low_confidence": LOW_CONFIDENCE, **flag_shares(answers, LOW_CONFIDENCE)}
    print(f"\n{'set':13s} {'images':>7s} {'accuracy':>9s} {'flagged low confidence':>23s} {'no digit found':>15s}")
    for row in result["sets"]:
        print(f"{row['name']:13s} {row['images']:7,d} {row['accuracy']:8.2f}% {row['flagged']:22.2f}% "
              f"{row['no_digit']:15d}")
    for n in result["nondigits"]:
        print(f"non-digits, {n['kind'] + 's':9s} {n['images']:3d} images: {n['caught']:.1f}% flagged low confidence "
              f"or no digit found")
    for threshold in thresholds:
        shares = flag_shares(answers, threshold)
        print(f"at {threshold}: flagged " + ", ".join(f"{r['name']} {r['flagged']:.2f}%" for r in shares["sets"]) +
              "; caught " + ", ".join(f"{n['kind']}s {n['caught']:.1f}%" for n in shares["nondigits"]))
    return result


def set_answers(model, out, names):
    """{set name: (top probabilities, predicted digits, labels)} for each of `names` found under `out`; the
    non-digits, unlabelled, with their kinds (letter, shape, blank) as labels."""
    import torch

    from predict import labelled_images

    answers = {}
    for name in names:
        if name == "nondigits":
            paths = sorted(glob.glob(os.path.join(out, "nondigits", "*")))
            kinds = [os.path.basename(p).split("_")[0] for p in paths]
        else:
            items = labelled_images(os.path.join(out, name))[0]  # none where the set was not written
            paths, kinds = [p for p, _ in items], torch.tensor([label for _, label in items])
        if paths:
            answers[name] = (*answers_for(model, paths), kinds)
    return answers


def flag_shares(answers, threshold):
    """Per set: accuracy and the share flagged under `threshold`; per kind of non-digit, the share caught."""
    import torch

    sets, nondigits = [], []
    for name, (top, preds, labels) in answers.items():
        if name != "nondigits":
            flagged = (top < threshold) & (preds >= 0)
            sets.append({"name": name, "images": len(labels), "wrong": int((preds != labels).sum()),
                         "accuracy": round(100 * (preds == labels).float().mean().item(), 2),
                         "flagged": round(100 * flagged.float().mean().item(), 2), "no_digit": int((preds < 0).sum())})
            continue
        for kind in sorted(set(labels)):
            pick = torch.tensor([k == kind for k in labels])
            caught = ((top[pick] < threshold) | (preds[pick] < 0)).float().mean().item()
            nondigits.append({"kind": kind, "images": int(pick.sum()), "caught": round(100 * caught, 1)})
    return {"sets": sets, "nondigits": nondigits}


def markdown(scores):
    """The README's table of a score() result, and its line on non-digits."""
    rows = [[f"`{r['name']}`", SETS[r["name"]], f"{r['images']:,}", f"{r['accuracy']:.2f}% ({r['wrong']:,} wrong)",
             f"{r['flagged']:.2f}%", str(r["no_digit"])] for r in scores["sets"]]
    table = cli.markdown_table(["set", "what", "images", "accuracy", "flagged low confidence", "no digit found"],
                               rows, align="llrrrr")
    caught = ", ".join(f"{n['kind']}s {n['caught']:.1f}% (of {n['images']})" for n in scores["nondigits"])
    half = f"{half_note(scores)} " if scores.get("half") else ""
    return (f"{table}\n{half}Non-digits flagged low confidence (top probability under {scores['low_confidence']}) or "
            f"\"no digit found\": {caught}.\n")


def half_note(scores):
    """The tables' line on which half of the sets a --json file's scores are of."""
    return f"The {scores['half']} half of every set (`--half {scores['half']}`)."


def sets_folder(args, write, what, need_bytes):
    """The folder to score: --score DIR, or --out DIR once write(DIR) has written the sets into it (a new or
    empty folder with room for `need_bytes`; write returns {set name: count}, printed as `what`)."""
    if args.score:
        if not os.path.isdir(args.score):
            raise cli.UserError(f"--score {args.score!r} is not a folder: give the --out folder the sets were "
                                "written to")
        return args.score
    if os.path.isdir(args.out) and os.listdir(args.out):
        raise cli.UserError(f"--out {args.out!r} is not empty: give a new folder (the sets are written afresh)")
    cli.check_out_dir(args.out, "--out", need_bytes=need_bytes)
    counts = write(args.out)
    print("wrote " + ", ".join(f"{name} {n:,}" for name, n in counts.items()) + f" {what} under {args.out}")
    return args.out


def save_scores(path, scores, half, **more):
    """A score result as the --json file, with the half, the date and `more`, written whole or not at all."""
    scores.update(half=half, date=time.strftime("%Y-%m-%d"), **more)
    cli.atomic_write(path, (json.dumps(scores, indent=2) + "\n").encode())


def main(argv=None):
    args = parse_args(argv)
    if args.markdown:
        print(markdown(cli.read_json(args.markdown, "--markdown")), end="")
        return
    folder = sets_folder(args, lambda out: write_sets(out, args.seed, args.photos, args.data_dir, args.half),
                         "images", 300_000_000)
    if args.checkpoint:
        scores = score(args.checkpoint, folder, args.sets, args.thresholds)
        if args.json:
            save_scores(args.json, scores, args.half, command=cli.command_line("eval_sets.py", argv))


if __name__ == "__main__":
    cli.run_cli(main)

"""Whole numbers to measure `predict.py --number` on: generated reproducibly from a fixed seed, then scored.

    python number_sets.py --out numbersets                     # write the sets (seed 0)
    python number_sets.py --out dev --half dev                 # from the other half of the digits, to tune on
    python number_sets.py --out numbersets --checkpoint CK.pth --json number_sets.json   # ... and score them
    python number_sets.py --markdown number_sets.json          # the README's table of those scores
    python predict.py CK.pth --number --evaluate numbersets/mnist   # or one set, with its misses grid

Each image is named <number>_<index>.png (or .jpg), as `predict.py --number --evaluate` reads labels. Numbers
are 3-7 digits written apart (gaps of a tenth to two thirds of a digit's height), each digit scaled on its
own (28-90 pixels tall), on a line sloping up to 8 degrees, with a comma or a dot between two
digits in a quarter of them:
  mnist        MNIST *test* digits, dark on white
  handwriting  scikit-learn's UCI handwritten digits (43 writers, not MNIST's), dark on white
  fonts        digits of the installed fonts training does not draw in (eval_sets.TRAINED_FAMILIES)
  photo        MNIST test digits and those fonts as ink on paper, photographed (eval_sets.photograph), the
               number across 30-90% of the photo's width: drawn four times larger first, and its pen sized
               to its digits, so that each digit is photographed as a single digit's photo is
  touching     2-3 MNIST test digits whose strokes touch, dark on white
The digits come from the same half (`--half`) of each source as eval_sets.py's single-digit sets.
"""
import os

import numpy as np

import cli
import eval_sets

NUMBERS = 300        # numbers in each set (150 with --half)
ACROSS = (0.3, 0.9)  # the share of a photo's width a number spans
PHOTO_SCALE = 4      # a photo's number is drawn this many times larger than a clean one, then photographed
SETS = {"mnist": "MNIST test digits, 3-7 apart on a sloping line, some with a comma or dot",
        "handwriting": "UCI handwriting (not MNIST), the same way",
        "fonts": "unseen fonts, the same way",
        "photo": "MNIST test digits and unseen fonts, photographed (as eval_sets' photos)",
        "touching": "2-3 MNIST test digits whose strokes touch"}


def build_parser():
    p = cli.parser(__doc__)
    p.add_argument("--out", metavar="DIR", help="a new folder for the sets; needed unless --markdown")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same images")
    p.add_argument("--numbers", type=int, metavar="N",
                   help=f"numbers in each set (default: {NUMBERS}, or {NUMBERS // 2} with --half)")
    p.add_argument("--half", choices=eval_sets.HALVES, help="draw digits from this half of each source only")
    eval_sets.add_scoring_flags(p)
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    if args.markdown:
        return args
    eval_sets.check_scoring_flags(args)
    if not args.out and not args.score:
        raise cli.UserError("give --out DIR to write the sets (or --score DIR to score written ones, or --markdown)")
    if args.numbers is None:
        args.numbers = NUMBERS // 2 if args.half else NUMBERS
    cli.check_range("--numbers", args.numbers, 1, 100_000)
    return args


# ---------------------------------------------------------------- composing numbers

def scaled(mask, height):
    """A float ink mask scaled smoothly to `height` pixels tall."""
    from PIL import Image

    img = Image.fromarray((mask * 255).astype(np.uint8))
    width = max(1, round(mask.shape[1] * height / mask.shape[0]))
    return np.asarray(img.resize((width, height), Image.BICUBIC), np.float32).clip(0, 255) / 255


def separator(height, rng):
    """A dot or a comma for a line of digits `height` pixels tall."""
    from PIL import Image, ImageDraw

    r = max(2, round(height * rng.uniform(0.05, 0.08)))
    img = Image.new("L", (4 * r, 8 * r), 0)
    d = ImageDraw.Draw(img)
    d.ellipse((r, r, 3 * r, 3 * r), fill=255)
    if rng.random() < 0.5:  # a comma's tail
        d.line([(3 * r - 1, 2 * r), (r, 6 * r)], fill=255, width=max(1, r))
    return eval_sets.crop(np.asarray(img, np.float32) / 255)


def apart(masks, rng):
    """The digits' masks written apart on one line: each scaled on its own, gaps of 0.1-0.67 of a digit's height,
    the line sloping up to 8 degrees, a dot or comma in one gap of a quarter of the numbers; one float mask."""
    return canvas(apart_placed(masks, rng))


def apart_placed(masks, rng, scale=1):
    """apart's marks, each scaled and placed: [(float mask, left, top), ...] for canvas; `scale`: all of it
    drawn that many times larger."""
    height = int(rng.integers(28, 90)) * scale
    slope = np.tan(np.radians(rng.uniform(-8, 8)))
    digits = [scaled(eval_sets.crop(m), max(8, round(height * rng.uniform(0.8, 1.15)))) for m in masks]
    comma = int(rng.integers(1, len(digits))) if len(digits) > 1 and rng.random() < 0.25 else None
    placed, x = [], 0
    for i, digit in enumerate(digits):
        if i == comma:
            mark = separator(height, rng)
            gap = int(height * rng.uniform(0.12, 0.3))
            placed.append((mark, x + gap, -mark.shape[0] + 3 * mark.shape[0] // 8))  # on the baseline
            x += gap + mark.shape[1]
        if i:
            x += int(height * rng.uniform(0.1, 0.67))
        placed.append((digit, x, -digit.shape[0]))
        x += digit.shape[1]
    return [(m, left, top - round(slope * left)) for m, left, top in placed]


def photographed(masks, rng):
    """The digits' masks written apart (as `apart`) and photographed, the number across 30-90% of the photo's
    width: JPEG bytes. Drawn larger than the clean sets' numbers, so that a font's thin strokes are not lost
    to a small drawing enlarged, and with a pen as thick for its digits as for one photographed alone."""
    placed = apart_placed(masks, rng, scale=PHOTO_SCALE)
    number = canvas(placed)
    digit = np.median([m.shape[0] for m, _, _ in placed])
    return eval_sets.photograph(number, rng, across=ACROSS, line=digit / number.shape[0])


def touching(masks, rng):
    """The digits' masks on one line, each pushed against the one before until their strokes overlap by 1-3
    pixels: one float mask."""
    return canvas(touching_placed(masks, rng))


def touching_placed(masks, rng, varied=False):
    """touching's digits, each scaled and placed: [(float mask, left, top), ...] for canvas. `varied`, for
    the marks train_reader.py learns from: each digit its own height (0.85-1.12 of the line's), its foot up
    to 3 pixels off the one before's, pushed 0-4 pixels past touching it (the set: 0-2)."""
    height = int(rng.integers(28, 70))
    sizes = rng.uniform(0.85, 1.12, len(masks)) if varied else np.ones(len(masks))
    digits = [scaled(eval_sets.crop(m), round(height * size)) for m, size in zip(masks, sizes, strict=True)]
    placed = [(digits[0], 0, 0)]
    for digit in digits[1:]:
        prev, left, top = placed[-1]
        if varied:
            top += prev.shape[0] - digit.shape[0] + int(rng.integers(-3, 4))
        x = left + prev.shape[1]
        while x > left and not overlap(placed, digit, x, top):
            x -= 1
        placed.append((digit, x - int(rng.integers(0, 5 if varied else 3)), top))
    return placed


def overlap(placed, digit, x, top=0):
    """Whether `digit` at column x, row `top` touches the ink already placed."""
    ink = canvas(placed + [(np.zeros_like(digit), x, top)])
    y = top - min(t for _, _, t in placed + [(digit, x, top)])
    region = ink[y:y + digit.shape[0], x:x + digit.shape[1]]
    return bool(((region > 0.4) & (digit > 0.4)).any())


def canvas(placed, width=None, margin=0):
    """Masks placed at (left, top) (top may be negative) drawn into one float mask, darkest ink kept."""
    top = min(t for _, _, t in placed)
    h = max(t + m.shape[0] for m, _, t in placed) - top
    w = width or max(left + m.shape[1] for m, left, _ in placed)
    out = np.zeros((h + 2 * margin, max(w, 1) + 2 * margin), np.float32)
    for m, left, t in placed:
        y, x = t - top + margin, left + margin
        region = out[y:y + m.shape[0], x:x + m.shape[1]]
        np.maximum(region, m[:, :region.shape[1]], out=region)
    return out


def on_paper(mask, rng):
    """A float ink mask as dark ink on white, with a margin of 20-100% of its height around it: PNG bytes."""
    from plots import gray_png

    pad = int(mask.shape[0] * rng.uniform(0.2, 1.0))
    page = np.pad(mask, pad)
    return gray_png(((1 - page) * 255).round().astype(np.uint8))


# ---------------------------------------------------------------- writing the sets

def sources(data_dir, half):
    """{source: (masks, labels)} for the digits of each source: MNIST test digits, the UCI handwriting (when
    scikit-learn is installed) and unseen fonts' digits, each the given half."""
    from data import load_mnist

    part = slice(None) if half is None else slice(eval_sets.HALVES.index(half), None, 2)
    test_x, test_y = load_mnist(data_dir, "test", "cpu")
    found = {"mnist": (test_x[part, 0].numpy().astype(np.float32) / 255, test_y[part].numpy())}
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("handwriting: left out (pip install scikit-learn to include it)")
    else:
        digits = load_digits()
        found["handwriting"] = ((digits.images[part] / 16).astype(np.float32), digits.target[part])
    fonts = [path for path in eval_sets.digit_fonts()[part] if not eval_sets.trained_family(path)]
    if not fonts:
        raise cli.UserError("no TrueType/OpenType font with digits is installed beyond the trained families: "
                            "install a font package (e.g. apt-get install fonts-liberation)")
    found["fonts"] = fonts
    return found


def digit_masks(source, digits, rng):
    """A float ink mask for each of `digits` from a source: a random image of that digit, or the digit in a
    random font."""
    if isinstance(source, list):
        font = source[int(rng.integers(len(source)))]
        return [eval_sets.glyph(font, str(d), 120, rng) for d in digits]
    images, labels = source
    return [images[rng.choice(np.flatnonzero(labels == d))] for d in digits]


def write_sets(out, seed, numbers, data_dir, half=None):
    """Write every set under `out`; returns {set name: number of images}."""
    rng = np.random.default_rng(seed if half is None else [seed, eval_sets.HALVES.index(half)])
    found = sources(data_dir, half)
    counts = {}
    for name in SETS:
        source = found.get({"photo": "mnist", "touching": "mnist"}.get(name, name))
        if source is None:
            continue
        for i in range(numbers):
            length = int(rng.integers(2, 4)) if name == "touching" else int(rng.integers(3, 8))
            digits = rng.integers(0, 10, length).tolist()
            label = "".join(map(str, digits))
            if name == "touching":
                data, ext = on_paper(touching(digit_masks(source, digits, rng), rng), rng), "png"
            elif name == "photo":
                pick = source if i % 2 == 0 else found["fonts"]  # half MNIST, half fonts, as the single set
                data, ext = photographed(digit_masks(pick, digits, rng), rng), "jpg"
            else:
                data, ext = on_paper(apart(digit_masks(source, digits, rng), rng), rng), "png"
            eval_sets.write(os.path.join(out, name, f"{label}_{i:04d}.{ext}"), data)
        counts[name] = numbers
    return counts


# ---------------------------------------------------------------- scoring

def score(checkpoint, out):
    """Whole-number and per-digit accuracy of a checkpoint on each set under `out`: printed, and returned
    as {"sets": [...], "checkpoint": {...}} (what --json writes)."""
    from checkpoint import load_checkpoint
    from predict import number_accuracy, numbered_images, read_numbers

    model, sidecar = load_checkpoint(checkpoint)
    rows = []
    print(f"\n{'set':12s} {'numbers':>8s} {'digits':>7s} {'whole number':>13s} {'per digit':>10s}")
    for name in SETS:
        items = numbered_images(os.path.join(out, name))[0]
        if not items:
            continue
        read = read_numbers(model, [path for path, _ in items])
        whole, per_digit = number_accuracy([r[0] for r in read], [label for _, label in items])
        rows.append({"name": name, "numbers": len(items), "digits": sum(len(label) for _, label in items),
                     "whole": round(whole, 2), "per_digit": round(per_digit, 2)})
        print(f"{name:12s} {len(items):8,d} {rows[-1]['digits']:7,d} {whole:12.2f}% {per_digit:9.2f}%")
    return {"checkpoint": {"file": os.path.basename(checkpoint),
                           **{k: sidecar.get(k) for k in ("model", "seed", "test_acc", "git_commit")}},
            "sets": rows}


def markdown(scores):
    """The README's table of a score() result."""
    rows = [[f"`{r['name']}`", SETS[r["name"]], f"{r['numbers']:,} ({r['digits']:,} digits)", f"{r['whole']:.2f}%",
             f"{r['per_digit']:.2f}%"] for r in scores["sets"]]
    table = cli.markdown_table(["set", "what", "numbers", "whole number", "per digit"], rows, align="llrrr")
    return table + (f"\n{eval_sets.half_note(scores)}\n" if scores.get("half") else "")


def main(argv=None):
    args = parse_args(argv)
    if args.markdown:
        print(markdown(cli.read_json(args.markdown, "--markdown")), end="")
        return
    folder = eval_sets.sets_folder(args, lambda out: write_sets(out, args.seed, args.numbers, args.data_dir, args.half),
                                   "numbers", 100_000_000)
    if args.checkpoint:
        scores = score(args.checkpoint, folder)
        if args.json:
            eval_sets.save_scores(args.json, scores, args.half, seed=args.seed)
            print(f"saved {args.json}")


if __name__ == "__main__":
    cli.run_cli(main)

"""Predict the digit in your own images (photos, scans, drawings) with a trained checkpoint.

    python predict.py model_mnist_<stamp>_acc<acc>.pth digit.jpg [more.png ...] [--top 3] [--show DIR]
    python predict.py CHECKPOINT --evaluate          # the MNIST test set: accuracy, per class, confusion matrix
    python predict.py CHECKPOINT --evaluate DIR      # your own labelled images, the same report
    python predict.py CHECKPOINT --number IMG...     # every digit of a number, left to right (segmentation.py)
    python predict.py CHECKPOINT --number --evaluate DIR   # labelled numbers: whole-number, per-digit accuracy

Each image is prepared as MNIST's digits were (preprocess.py): lighting flattened, the ink found and
the digit cut out of its surroundings, scaled into a 20x20 box and centred by mass in 28x28. Each
printed line starts `PATH: D (P%)`; a line ends with [low confidence] when the model's top
probability is under LOW_CONFIDENCE (inference.py), which is how a letter, a shape or a smudge
usually shows; a single digit's line ends with [several digits: use --number] when the image plainly
holds a row of them. With --number a line reads `PATH: 90210 (9 98.1%, 0 99.0%, ...)`. The sidecar .json
beside the checkpoint says which variant to rebuild; pass --model when it is missing.
"""
import cli

if __name__ == "__main__":
    cli.exit_quietly_on_signals()

import os
import re

import torch

import plots
from checkpoint import load_checkpoint
from data import load_mnist
from imageops import side_by_side
from inference import low_confidence, probabilities
from model import MODELS
from preprocess import FORMATS, found_digit, framed, read_image, to_mnist
from segmentation import images_of, number_read, probabilities_of, read_number, several

LABEL_HELP = ("labels come from the parent folder's name (0-9), else from 'label<d>' in the file name, "
              "else from the file name's first character when it is a digit")
NUMBER_LABEL_HELP = ("with --number, a label is the file name's digits before its first '_' (90210_a.jpg), "
                     "else the parent folder's name when it is all digits")
SEVERAL = " [several digits: use --number]"
MISSES_SHOWN = 40
MNIST_TEST_SET = object()  # what --evaluate without DIR stands for


def build_parser():
    p = cli.parser(__doc__)
    p.add_argument("checkpoint", help="a model_mnist_*.pth (its .json sidecar beside it)")
    p.add_argument("images", nargs="*", help=f"image files to classify ({FORMATS})")
    p.add_argument("--top", type=int, default=1, metavar="K", help="how many of the most likely digits to print")
    p.add_argument("--model", metavar="NAME", help=f"variant, when the checkpoint has no sidecar: {', '.join(MODELS)}")
    p.add_argument("--evaluate", nargs="?", const=MNIST_TEST_SET, metavar="DIR",
                   help=f"without DIR: the 10k MNIST test set; with DIR: the images under it ({LABEL_HELP}). "
                        "Prints accuracy, per class and the confusion matrix; writes confusion_matrix.png, and "
                        "for DIR misses.png (each miss beside the 28x28 image the model saw)")
    p.add_argument("--number", action="store_true",
                   help="read every digit in each image, left to right (a ZIP code, an amount); with --evaluate "
                        f"DIR, score whole numbers ({NUMBER_LABEL_HELP})")
    p.add_argument("--show", metavar="DIR", help="write the 28x28 image the model saw for each input image to DIR "
                                                 "(with --number, the digits side by side)")
    cli.add_data_dir(p, "MNIST root for --evaluate without DIR")
    cli.add_out_dir(p, "--evaluate writes its PNGs")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    cli.check_range("--top", args.top, 1, 10)
    if args.number and args.top != 1:
        raise cli.UserError("--top lists one digit's alternatives: leave it out with --number")
    if args.number and args.evaluate is MNIST_TEST_SET:
        raise cli.UserError("--number --evaluate needs a folder of labelled numbers: --number --evaluate DIR")
    if not args.images and args.evaluate is None:
        raise cli.UserError("give at least one image to classify, or --evaluate")
    if args.evaluate not in (None, MNIST_TEST_SET) and not os.path.isdir(args.evaluate):
        raise cli.UserError(f"--evaluate {args.evaluate!r} is not a folder: give a folder of labelled images, "
                            "or --evaluate alone for the MNIST test set")
    return args


def format_prediction(path, probs, top):
    """`PATH: D (P%)[, D (P%) ...]`, then ` [low confidence]` when the top probability is low."""
    values, digits = probs.topk(top)
    line = f"{path}: " + ", ".join(f"{int(d)} ({100 * float(v):.1f}%)" for v, d in zip(values, digits, strict=True))
    return line + (" [low confidence]" if low_confidence(probs) else "")


def format_number(path, probs):
    """`PATH: 90210 (9 98.1%, 0 99.0%, ...)`, then ` [low confidence]` when any digit's top probability is low."""
    values, digits = probs.max(1)
    line = (f"{path}: " + number_read(probs) + " (" +
            ", ".join(f"{int(d)} {100 * float(v):.1f}%" for v, d in zip(values, digits, strict=True)) + ")")
    return line + (" [low confidence]" if any(low_confidence(p) for p in probs) else "")


def classify(model, paths, args):
    """Every image read and prepared before any line is printed: one bad file, one error line."""
    if args.show:
        cli.check_out_dir(args.show, "--show")
    readings = [found_digit(read_image(cli.read_file(path, "image"), path), path) for path in paths]
    if args.number:
        numbers = [read_number(reading, recogniser(model), path) for reading, path in zip(readings, paths, strict=True)]
        shown = [side_by_side(images_of(number)) for number in numbers]
        lines = [format_number(path, probabilities_of(number)) for path, number in zip(paths, numbers, strict=True)]
    else:
        shown = torch.stack([framed(reading) for reading in readings])
        lines = [format_prediction(path, probs, args.top) + (SEVERAL if several(reading) else "")
                 for path, probs, reading in zip(paths, probabilities(model, shown), readings, strict=True)]
    if args.show:
        for digit, name in zip(shown, show_names(paths), strict=True):
            plots.save_digit(digit, os.path.join(args.show, name))
    for line in lines:
        print(line)


def recogniser(model):
    """The model as segmentation.py takes it: (N, 1, 28, 28) uint8 in, (N, 10) probabilities out."""
    return lambda images: probabilities(model, images)


def show_names(paths):
    """<stem>_28x28.png for each path; a stem seen before gets its position added, so none is overwritten."""
    names, seen = [], set()
    for i, path in enumerate(paths):
        stem = os.path.splitext(os.path.basename(path))[0]
        name = f"{stem}_28x28.png" if stem not in seen else f"{stem}_{i}_28x28.png"
        seen.add(stem)
        names.append(name)
    return names


# ---------------------------------------------------------------- evaluation

def report(preds, labels, title, out_dir):
    """Print accuracy, per-class accuracy and the confusion matrix; save the matrix as PNG. A prediction
    of -1 (no digit found) counts as wrong."""
    confusion = torch.zeros(10, 11, dtype=torch.long)  # the last column: no digit found
    confusion.index_put_((labels, preds.where(preds >= 0, 10)), torch.ones_like(labels), accumulate=True)
    right = int(confusion.diag().sum())
    accuracy = 100 * right / len(labels)
    counts = confusion.sum(1)
    print(f"{title} accuracy: {accuracy:.2f}% ({len(labels) - right} of {len(labels)} wrong)")
    print("per class: " + "  ".join(f"{d}: {100 * confusion[d, d] / n:.2f}%" if n else f"{d}: -"
                                    for d, n in enumerate(counts.tolist())))
    print("confusion matrix (rows: true digit, columns: predicted" +
          ("; -: no digit found):" if confusion[:, 10].any() else "):"))
    columns = 11 if confusion[:, 10].any() else 10
    print("      " + "".join(f"{d:>6}" for d in list(range(10)) + ["-"])[:6 * columns])
    for d in range(10):
        print(f"{d:>6d}" + "".join(f"{int(c):>6d}" for c in confusion[d, :columns]))
    path = os.path.join(out_dir, "confusion_matrix.png")
    plots.save_confusion_matrix(confusion[:, :10], accuracy, path, title)
    print(f"saved {path}")
    return accuracy


def evaluate_mnist(model, data_dir, out_dir):
    images, labels = load_mnist(data_dir, "test", "cpu")
    cli.check_out_dir(out_dir)
    return report(probabilities(model, images).argmax(1), labels, "MNIST test set", out_dir)


def labelled_files(folder, label_of):
    """(path, label) for every file under `folder` that label_of(file name, parent folder's name) gives a
    label for (not None), sorted; and how many files had none."""
    found, unlabelled = [], 0
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            label = label_of(name, os.path.basename(root))
            if label is None:
                unlabelled += 1
            else:
                found.append((os.path.join(root, name), label))
    return sorted(found), unlabelled


def digit_label(name, parent):
    """A single digit's label (LABEL_HELP), or None."""
    tag = re.search(r"label(\d)", name)
    return (int(parent) if re.fullmatch(r"\d", parent) else int(tag.group(1)) if tag else
            int(name[0]) if name[0].isdigit() else None)


def labelled_images(folder):
    """(path, digit) for every file under `folder` that a label can be read for, sorted; and how many had none."""
    return labelled_files(folder, digit_label)


def answers(model, digits):
    """(top probability, predicted digit) for each prepared digit of a list, (0, -1) where it is None
    (no digit found)."""
    found = [i for i, d in enumerate(digits) if d is not None]
    top, preds = torch.zeros(len(digits)), torch.full((len(digits),), -1, dtype=torch.long)
    if found:
        top[found], preds[found] = probabilities(model, torch.stack([digits[i] for i in found])).max(1)
    return top, preds


def evaluate_folder(model, folder, out_dir):
    """Accuracy of the model on the user's own labelled images; writes confusion_matrix.png and misses.png."""
    cli.check_out_dir(out_dir)
    items, unlabelled = labelled_images(folder)
    originals, digits, labels, unreadable = [], [], [], 0
    for path, label in items:
        try:
            gray = read_image(cli.read_file(path, "image"), path)
        except cli.UserError:
            unreadable += 1  # a note or a stray file beside the images
            continue
        try:
            digit = to_mnist(gray, path)
        except cli.UserError:
            digit = None  # no digit found: counted as wrong
        originals.append(gray)
        digits.append(digit)
        labels.append(label)
    if not labels:
        raise cli.UserError(f"no labelled image under {folder!r}: {LABEL_HELP}")
    preds = answers(model, digits)[1]
    labels = torch.tensor(labels)
    print(f"{len(labels):,} labelled images under {folder}" +
          (f"; {int((preds < 0).sum())} with no digit found (counted as wrong)" if (preds < 0).any() else "") +
          (f"; left out: {unreadable} unreadable" if unreadable else "") +
          (f", {unlabelled} without a label" if unlabelled else ""))
    accuracy = report(preds, labels, os.path.basename(os.path.normpath(folder)) or folder, out_dir)
    misses = (preds != labels).nonzero().flatten()[:MISSES_SHOWN].tolist()
    if misses:
        path = os.path.join(out_dir, "misses.png")
        empty = torch.zeros(1, 28, 28, dtype=torch.uint8)
        plots.save_misses([originals[i] for i in misses], [digits[i] if digits[i] is not None else empty
                                                           for i in misses],
                          [f"true {int(labels[i])} / {'none' if preds[i] < 0 else int(preds[i])}" for i in misses],
                          path)
        print(f"saved {path} (the first {len(misses)} misses, each beside the 28x28 image the model saw)")
    return accuracy


# ---------------------------------------------------------------- numbers

def number_label(name, parent):
    """A number's label (NUMBER_LABEL_HELP), as a string of digits, or None."""
    stem = name.split("_")[0] if "_" in name else None
    return stem if stem and stem.isascii() and stem.isdigit() else \
        parent if parent.isascii() and parent.isdigit() else None


def numbered_images(folder):
    """(path, number) for every file under `folder` with a number label, sorted; and how many had none."""
    return labelled_files(folder, number_label)


def read_numbers(model, paths):
    """For each image file: (the number read, "" when none; its digits (K, 1, 28, 28) or None; the gray
    image, or None when the file is no readable image)."""
    read = []
    for path in paths:
        try:
            gray = read_image(cli.read_file(path, "image"), path)
        except cli.UserError:
            read.append(("", None, None))
            continue
        try:
            digits = read_number(found_digit(gray, path), recogniser(model), path)
        except cli.UserError:
            read.append(("", None, gray))
            continue
        read.append((number_read(probabilities_of(digits)), images_of(digits), gray))
    return read


def edit_distance(a, b):
    """Levenshtein distance: the digits inserted, dropped or misread to turn `a` into `b`."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def number_accuracy(read, labels):
    """Whole-number accuracy and per-digit accuracy, in percent: a label's digits less the edits (misread,
    missed or extra digits) that turn the reading into it, over all labels' digits."""
    whole = sum(r == label for r, label in zip(read, labels, strict=True))
    right = sum(max(0, len(label) - edit_distance(r, label)) for r, label in zip(read, labels, strict=True))
    return 100 * whole / len(labels), 100 * right / sum(len(label) for label in labels)


def evaluate_numbers(model, folder, out_dir):
    """Whole-number and per-digit accuracy on the user's own labelled numbers; writes misses.png."""
    cli.check_out_dir(out_dir)
    items, unlabelled = numbered_images(folder)
    if not items:
        raise cli.UserError(f"no labelled number under {folder!r}: {NUMBER_LABEL_HELP}")
    read = read_numbers(model, [path for path, _ in items])
    pairs = [(r, (path, label)) for r, (path, label) in zip(read, items, strict=True) if r[2] is not None]
    if not pairs:
        raise cli.UserError(f"no readable image under {folder!r}: pass a folder of image files ({FORMATS})")
    labels = [label for _, (_, label) in pairs]
    texts = [r[0] for r, _ in pairs]
    whole, per_digit = number_accuracy(texts, labels)
    left_out = len(items) - len(pairs)
    print(f"{len(pairs):,} labelled numbers ({sum(map(len, labels)):,} digits) under {folder}" +
          (f"; left out: {left_out} unreadable" if left_out else "") +
          (f", {unlabelled} without a label" if unlabelled else ""))
    wrong = [i for i, (text, label) in enumerate(zip(texts, labels, strict=True)) if text != label]
    print(f"whole-number accuracy: {whole:.2f}% ({len(wrong)} of {len(labels)} wrong)")
    print(f"per-digit accuracy: {per_digit:.2f}% (a label's digits less the edits that turn the reading into it)")
    if wrong:
        shown = wrong[:MISSES_SHOWN]
        empty = torch.zeros(1, 28, 28, dtype=torch.uint8)
        path = os.path.join(out_dir, "misses.png")
        plots.save_misses([pairs[i][0][2] for i in shown],
                          [side_by_side(pairs[i][0][1]) if pairs[i][0][1] is not None else empty for i in shown],
                          [f"true {labels[i]} / {texts[i] or 'none'}" for i in shown], path, cols=2)
        print(f"saved {path} (the first {len(shown)} misses, each beside the digits the model saw)")
    return whole, per_digit


def main(argv=None):
    args = parse_args(argv)
    model, _ = load_checkpoint(args.checkpoint, args.model)
    if args.evaluate is MNIST_TEST_SET:
        evaluate_mnist(model, args.data_dir, args.out_dir)
    elif args.evaluate is not None and args.number:
        evaluate_numbers(model, args.evaluate, args.out_dir)
    elif args.evaluate is not None:
        evaluate_folder(model, args.evaluate, args.out_dir)
    if args.images:
        classify(model, args.images, args)


if __name__ == "__main__":
    cli.run_cli(main)

"""Predict the digit in your own images with a trained checkpoint.

    python predict.py model_mnist_<stamp>_acc<acc>.pth digit.png [more.jpg ...] [--top 3]
    python predict.py CHECKPOINT --evaluate          # MNIST test set: accuracy, per class, confusion matrix

Images of any size and colour mode are prepared the way MNIST's were: grayscale, inverted when the
digit is dark on a light background, cropped to the digit, scaled into a 20x20 box and centred by
mass in 28x28. The sidecar .json beside the checkpoint says which variant to rebuild; pass --model
when it is missing.
"""
import cli

if __name__ == "__main__":
    cli.exit_quietly_on_signals()

import io
import logging
import os
import warnings

import torch
import torch.nn.functional as F

import plots
from checkpoint import load_checkpoint
from data import load_mnist
from inference import probabilities
from model import MODELS

INK_THRESHOLD = 0.2  # after background removal, pixels above this (0..1) count as the digit
FORMATS = "PNG, JPEG, GIF, BMP, TIFF, WebP, PPM/PGM and the other formats Pillow reads"
# Pillow logs what it finds wrong in a damaged file; with no handler Python would print that to
# stderr beside our one line, which already says it.
logging.getLogger("PIL").addHandler(logging.NullHandler())


def build_parser():
    p = cli.parser(__doc__)
    p.add_argument("checkpoint", help="a model_mnist_*.pth (its .json sidecar beside it)")
    p.add_argument("images", nargs="*", help=f"image files to classify ({FORMATS})")
    p.add_argument("--top", type=int, default=1, help="how many of the most likely digits to print")
    p.add_argument("--model", help=f"variant, when the checkpoint has no sidecar: {', '.join(MODELS)}")
    p.add_argument("--evaluate", action="store_true", help="evaluate on the 10k MNIST test set instead")
    cli.add_data_dir(p, "MNIST root for --evaluate")
    cli.add_out_dir(p, "--evaluate writes confusion_matrix.png")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    if not 1 <= args.top <= 10:
        raise cli.UserError(f"--top must be between 1 and 10, got {args.top}")
    if not args.images and not args.evaluate:
        raise cli.UserError("give at least one image to classify, or --evaluate")
    return args


def load_image(path):
    """An image file as a float tensor (H, W) in [0, 1], white = 1; one-line errors for bad files."""
    from PIL import Image, ImageOps

    raw = cli.read_file(path, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's notes on odd metadata: the pixels are what matter
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))
            img = ImageOps.exif_transpose(img)  # phone photos store their rotation in EXIF
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                # Transparent pixels count as paper: flatten onto white before going to gray.
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, rgba)
            gray = img.convert("L")
            data = bytearray(gray.tobytes())
    except Exception as e:  # a damaged or hostile file can make a decoder raise almost anything
        raise cli.UserError(f"{path} is not a readable image ({type(e).__name__}): pass an image file "
                            f"({FORMATS})") from None
    return torch.frombuffer(data, dtype=torch.uint8).view(gray.height, gray.width).float() / 255.0


def to_mnist(gray, path="image"):
    """(H, W) gray in [0,1] -> (1, 28, 28) uint8, white digit on black, as MNIST digits were made."""
    border = torch.cat([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if border.median() > 0.5:  # light paper, dark ink: MNIST is the other way round
        gray = 1 - gray
        border = 1 - border
    background, peak = border.median(), gray.max()
    if peak - background < 0.1:
        raise cli.UserError(f"{path}: no digit found (the image is blank or has no contrast)")
    ink = ((gray - background) / (peak - background)).clamp(0, 1)
    ink = torch.where(ink > INK_THRESHOLD, ink, torch.zeros_like(ink))  # paper texture and shadows
    rows, cols = ink.sum(1).nonzero().flatten(), ink.sum(0).nonzero().flatten()
    digit = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]

    # Longer side to 20 pixels, aspect kept; antialiased so thin strokes survive the shrink.
    h, w = digit.shape
    scale = 20 / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    digit = F.interpolate(digit[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
    digit = digit / digit.max()

    # Place it so its centre of mass sits at the centre of the 28x28 field.
    ys, xs = torch.arange(size[0], dtype=torch.float32), torch.arange(size[1], dtype=torch.float32)
    mass = digit.sum()
    com_y, com_x = (digit.sum(1) * ys).sum() / mass, (digit.sum(0) * xs).sum() / mass
    top = int((14 - com_y).round().clamp(0, 28 - size[0]))
    left = int((14 - com_x).round().clamp(0, 28 - size[1]))
    canvas = torch.zeros(28, 28)
    canvas[top:top + size[0], left:left + size[1]] = digit
    return (canvas * 255).round().to(torch.uint8)[None]


def format_prediction(path, probs, top):
    values, digits = probs.topk(top)
    return f"{path}: " + ", ".join(f"{int(d)} ({100 * float(v):.1f}%)" for v, d in zip(values, digits))


def evaluate(model, data_dir, out_dir):
    """Accuracy, per-class accuracy and confusion matrix on the MNIST test set; saves the matrix as PNG."""
    images, labels = load_mnist(data_dir, "test", "cpu")
    cli.check_out_dir(out_dir)
    preds = probabilities(model, images).argmax(1)
    confusion = torch.zeros(10, 10, dtype=torch.long)
    confusion.index_put_((labels, preds), torch.ones_like(labels), accumulate=True)
    per_class = 100 * confusion.diag() / confusion.sum(1)
    accuracy = 100 * confusion.diag().sum().item() / len(labels)
    print(f"test accuracy: {accuracy:.2f}% ({len(labels) - confusion.diag().sum().item()} of {len(labels)} wrong)")
    print("per class: " + "  ".join(f"{d}: {a:.2f}%" for d, a in enumerate(per_class.tolist())))
    print("confusion matrix (rows: true digit, columns: predicted):")
    print("      " + "".join(f"{d:>6d}" for d in range(10)))
    for d in range(10):
        print(f"{d:>6d}" + "".join(f"{int(c):>6d}" for c in confusion[d]))
    path = os.path.join(out_dir, "confusion_matrix.png")
    plots.save_confusion_matrix(confusion, accuracy, path)
    print(f"saved {path}")
    return accuracy, per_class, confusion


def main(argv=None):
    args = parse_args(argv)
    model, _ = load_checkpoint(args.checkpoint, args.model)
    if args.evaluate:
        evaluate(model, args.data_dir, args.out_dir)
    if args.images:
        # Every image is read and checked before any line is printed: one bad file, one error line.
        batch = torch.stack([to_mnist(load_image(path), path) for path in args.images])
        for path, probs in zip(args.images, probabilities(model, batch)):
            print(format_prediction(path, probs, args.top))


if __name__ == "__main__":
    cli.run_cli(main)

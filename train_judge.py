"""Train the judge segmentation.py asks whether a piece of a cut is one whole digit (judge.pth).

    python train_judge.py                      # about 12 minutes on 2 CPU cores; rewrites judge.pth

The digit model reads a stray stroke end, or two narrow digits in one box, as confidently as a whole
digit: it has no answer for "not one digit". So touching numbers are built from MNIST *training* digits,
as number_sets.touching builds the touching set from test digits, and every piece of every cut
segmentation.py tries on them is labelled: the digit it is, when it holds nearly all of one digit's ink
and little else (PURE), else "not one digit". The judge (model.PieceJudge) learns those labels beside
MNIST's 60,000 training digits. Why, and how well it does: EXPERIMENTS.md, "A judge for the pieces of a
cut".
"""
import io

import numpy as np
import torch
import torch.nn.functional as F

import cli
import number_sets
import segmentation
from data import load_mnist
from model import PieceJudge
from plots import gray_png
from preprocess import Reading, found_digit, framed, read_image

NUMBERS = 1200     # touching numbers of 2-3 digits to cut (about 200 pieces each)
PURE = 0.85        # a piece is a digit when at least this share of its ink is that digit's, and it holds
                   # at least this share of that digit's ink
EPOCHS = 2
BATCH = 256
LR = 4e-3          # the one-cycle schedule's peak


def build_parser():
    p = cli.parser(__doc__)
    p.add_argument("--out", default=segmentation.JUDGE, metavar="FILE", help="where to write the judge")
    p.add_argument("--numbers", type=int, default=NUMBERS, help=f"touching numbers to cut (default {NUMBERS})")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"passes over the pieces (default {EPOCHS})")
    p.add_argument("--seed", type=int, default=2, help="random seed of the numbers and of training")
    cli.add_data_dir(p)
    return p


def pieces(numbers, images, labels, rng):
    """(images (N, 1, 28, 28) uint8, labels (N,): 0-9, or 10 for not one digit) of every piece of every cut
    segmentation.py tries on `numbers` touching numbers of the given digits (float masks, labels)."""
    found, kinds = [], []
    for _ in range(numbers):
        digits = rng.integers(0, 10, int(rng.integers(2, 4))).tolist()
        cut, kind = pieces_of([images[rng.choice(np.flatnonzero(labels == d))] for d in digits], digits, rng)
        found += cut
        kinds += kind
    if not found:
        raise cli.UserError(f"none of {numbers} numbers came out as one touching mark: ask for more with --numbers")
    return torch.stack(found), torch.tensor(kinds)


def pieces_of(masks, digits, rng):
    """The pieces of every cut tried on the digits' float masks pushed together (number_sets.touching), as
    framed images, and their labels; none when the digits do not come out as one touching mark."""
    placed = number_sets.touching_placed(masks, rng)
    whole = number_sets.canvas(placed)
    pad = whole.shape[0] // 2
    reading = found_digit(read_image(gray_png(((1 - np.pad(whole, pad)) * 255).round().astype(np.uint8))))
    marks = segmentation.groups(reading)
    if len(marks) != 1 or tuple(reading.ink.shape) != (whole.shape[0] + 2 * pad, whole.shape[1] + 2 * pad):
        return [], []  # apart after all (or the page was shrunk, and the digits' pixels moved)
    mask = marks[0]
    alone = [torch.from_numpy(np.pad(number_sets.canvas([p], width=whole.shape[1]), pad) > 0.4) & mask
             for p in placed]
    found, kinds = [], []
    for option in [[mask]] + segmentation.cuts(reading.ink, mask):
        for piece in option:
            shared = torch.tensor([int((piece & a).sum()) for a in alone])
            k = int(shared.argmax())
            pure = shared[k] >= PURE * int(piece.sum()) and shared[k] >= PURE * int(alone[k].sum())
            found.append(framed(Reading(reading.ink, piece)))
            kinds.append(digits[k] if pure else 10)
    return found, kinds


def train(images, labels, epochs, seed):
    """A PieceJudge trained on uint8 images and labels 0-10: AdamW under a one-cycle schedule."""
    torch.manual_seed(seed)
    judge = PieceJudge()
    steps = epochs * (len(images) // BATCH)
    opt = torch.optim.AdamW(judge.parameters(), LR, weight_decay=1e-4)  # OneCycleLR sets every step's rate
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=steps)
    for epoch in range(epochs):
        order = torch.randperm(len(images))
        for k in range(len(images) // BATCH):
            batch = order[k * BATCH:(k + 1) * BATCH]
            loss = F.nll_loss(judge(images[batch].float() / 255), labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}")
    return judge.eval()


def main(argv=None):
    args = build_parser().parse_args(argv)
    cli.check_range("--numbers", args.numbers, 1, 100_000)
    cli.check_range("--epochs", args.epochs, 1, 100)
    cli.check_out_file(args.out, "--out")
    x, y = load_mnist(args.data_dir, "train", "cpu")
    rng = np.random.default_rng(args.seed)
    cut, kinds = pieces(args.numbers, x[:, 0].numpy().astype(np.float32) / 255, y.numpy(), rng)
    print(f"{len(cut):,} pieces of {args.numbers:,} numbers, {int((kinds < 10).sum()):,} of them one digit")
    judge = train(torch.cat([cut, x]), torch.cat([kinds, y]), args.epochs, args.seed)
    buffer = io.BytesIO()
    torch.save(judge.state_dict(), buffer)
    cli.atomic_write(args.out, buffer.getvalue())
    print(f"saved {args.out}")


if __name__ == "__main__":
    cli.run_cli(main)

"""Train the reader segmentation.py weighs the cuts of touching digits with (reader.pth).

    python train_reader.py                     # about 25 minutes on 2 CPU cores; rewrites reader.pth

The digit model reads a stray stroke end, or two narrow digits in one box, as confidently as a whole
digit, so the cut whose pieces it reads most confidently is often a wrong one. The reader
(model.MarkReader) reads the uncut mark as a whole instead: how many digits it holds, and which. It
learns from marks of one to three MNIST *training* digits pushed together until their strokes touch, as
number_sets.touching builds the touching set from test digits, most of them varied more
(number_sets.touching_placed). Why, and how well it does: EXPERIMENTS.md, "A reader of the whole mark".
"""
import io

import numpy as np
import torch
import torch.nn.functional as F

import cli
import number_sets
import segmentation
from data import load_mnist
from imageops import frame_wide
from model import MarkReader
from preprocess import Reading, cut_out

NUMBERS = 100_000          # marks to learn from
COUNTS = [0.2, 0.4, 0.4]   # how often a mark holds one, two and three digits
VARIED = 0.7               # the share of marks varied more than the touching set's
INK = 0.3                  # a mark's pixels are those with more ink than this
SHIFT = (2, 3)             # each batch moved by up to this many pixels down and across
EPOCHS = 5
BATCH = 128
LR = 3e-3                  # the one-cycle schedule's peak


def build_parser():
    p = cli.parser(__doc__)
    p.add_argument("--out", default=segmentation.READER, metavar="FILE", help="where to write the reader")
    p.add_argument("--numbers", type=int, default=NUMBERS, help=f"marks to learn from (default {NUMBERS})")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"passes over the marks (default {EPOCHS})")
    p.add_argument("--seed", type=int, default=2, help="random seed of the marks and of training")
    cli.add_data_dir(p)
    return p


def marks(numbers, images, labels, rng):
    """`numbers` marks of one to three of the digits' float masks pushed together, each with MNIST's label
    for its digits: (images (N, 1, 28, 80) uint8, counts (N,) 0-2 for one to three digits, digits (N, 3),
    0 past the count)."""
    found, counts, digits = [], [], []
    each = [np.flatnonzero(labels == d) for d in range(10)]  # the images of each digit
    for _ in range(numbers):
        these = rng.integers(0, 10, int(rng.choice(3, p=COUNTS)) + 1).tolist()
        found.append(mark_of([images[rng.choice(each[d])] for d in these], rng))
        counts.append(len(these) - 1)
        digits.append(these + [0] * (3 - len(these)))
    return torch.stack(found), torch.tensor(counts), torch.tensor(digits)


def mark_of(masks, rng):
    """The digits' float masks pushed together, framed for the reader as segmentation.py frames a mark."""
    ink = torch.from_numpy(number_sets.canvas(number_sets.touching_placed(masks, rng, rng.random() < VARIED)))
    return frame_wide(cut_out(Reading(ink, ink > INK)))


def train(images, counts, digits, epochs, seed):
    """A MarkReader trained on the marks: how many digits, and the digit in each of that count's places;
    AdamW under a one-cycle schedule."""
    torch.manual_seed(seed)
    reader = MarkReader()
    steps = epochs * (len(images) // BATCH)
    opt = torch.optim.AdamW(reader.parameters(), LR, weight_decay=1e-4)  # OneCycleLR sets every step's rate
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=steps)
    for epoch in range(epochs):
        order = torch.randperm(len(images))
        for k in range(len(images) // BATCH):
            batch = order[k * BATCH:(k + 1) * BATCH]
            shift = [int(torch.randint(-s, s + 1, ())) for s in SHIFT]
            count, places = reader(torch.roll(images[batch].float() / 255, shift, (2, 3)))
            held = torch.arange(3) <= counts[batch, None]  # the places this mark has a digit in
            rows = (torch.tensor(MarkReader.PLACES)[counts[batch], None] + torch.arange(3)).clamp_max(5)
            read = places[torch.arange(len(batch))[:, None], rows, digits[batch]]  # (B, 3): each place's digit
            place_loss = -(read * held).sum() / len(batch)
            loss = F.nll_loss(count, counts[batch]) + place_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}")
    return reader.eval()


def main(argv=None):
    args = build_parser().parse_args(argv)
    cli.check_range("--numbers", args.numbers, BATCH, 1_000_000)
    cli.check_range("--epochs", args.epochs, 1, 100)
    cli.check_out_file(args.out, "--out")
    x, y = load_mnist(args.data_dir, "train", "cpu")
    rng = np.random.default_rng(args.seed)
    images, counts, digits = marks(args.numbers, x[:, 0].numpy().astype(np.float32) / 255, y.numpy(), rng)
    print(f"{len(images):,} marks of one to three digits")
    reader = train(images, counts, digits, args.epochs, args.seed)
    buffer = io.BytesIO()
    torch.save(reader.state_dict(), buffer)
    cli.atomic_write(args.out, buffer.getvalue())
    print(f"saved {args.out}")


if __name__ == "__main__":
    cli.run_cli(main)

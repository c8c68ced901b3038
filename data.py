"""MNIST on the device: reading the IDX files, the input contract every model is trained on, and
batched augmentation.

    images, labels = load_mnist(data_dir, "train", device)   # uint8 (N,1,28,28), int64 (N,)
    x = to_input(images)                                     # what a model takes

The raw IDX files are read directly (importing torchvision costs over a second); torchvision is
only imported to download them when they are absent.
"""
import functools
import math
import os
import shutil
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cli import UserError
from imageops import dilate, frame

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
AUGMENTATIONS = ("rotate", "affine", "stroke", "lowres", "erase", "noise")  # what augment() does to each image


@dataclass(frozen=True)
class Strengths:
    """How strong each augmentation is (train.py's RECIPE gives every value): rotation, shifts, scale and
    shear ranges; the share of samples that stroke, erase, noise and lowres touch, and their ranges."""
    rotate_deg: float
    translate_px: float
    scale: tuple
    shear_deg: float
    stroke_prob: float
    erase_prob: float
    erase_area: tuple
    noise_prob: float
    noise_std_max: float
    lowres_prob: float
    lowres_px: tuple


@dataclass(frozen=True)
class Printed:
    """The printed digits added to the training set: per_digit of each digit, `ones` of the 1, each
    added `repeats` times (each epoch's augmentation varies them)."""
    per_digit: int
    ones: int
    repeats: int


# ---------------------------------------------------------------- reading MNIST

def load_mnist(data_dir, split, device):
    """(images uint8 (N,1,28,28), labels int64 (N,)) of `split` ("train" or "test") on `device`,
    from torchvision's MNIST layout under data_dir, downloading the files first when absent."""
    paths = mnist_files(data_dir, split)
    if not all(os.path.isfile(p) for p in paths):
        download_mnist(data_dir)
    images, labels = (read_idx(p) for p in paths)
    if images.dim() != 3 or images.shape[1:] != (28, 28) or labels.dim() != 1 or len(images) != len(labels):
        raise UserError(f"MNIST files in {os.path.dirname(paths[0])!r} have unexpected shapes: "
                        "delete them to download afresh")
    if len(labels) and labels.max() > 9:  # uint8, so never below 0
        raise UserError(f"{paths[1]} has labels outside 0-9 (up to {int(labels.max())}): "
                        "delete it to download afresh")
    return images.unsqueeze(1).to(device), labels.long().to(device)


def mnist_files(data_dir, split):
    """(images, labels) file paths of `split` in torchvision's layout under data_dir."""
    return [os.path.join(data_dir, "MNIST", "raw", f) for f in MNIST_FILES[split]]


def read_idx(path):
    """An IDX file (the MNIST format: magic, dims, then uint8 data) as a uint8 tensor."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror}): check its permissions, or delete it to download "
                        "afresh") from None
    ndim = data[3] if len(data) > 4 else 0
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    body = data[4 + 4 * ndim:]
    if data[:3] != b"\x00\x00\x08" or not dims or len(body) != math.prod(dims):
        raise UserError(f"{path} is not a complete MNIST IDX file: delete it to download afresh")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).view(*dims)


def download_mnist(data_dir):
    from torchvision.datasets import MNIST

    # The folder a failed download would leave behind: data_dir itself, or the MNIST folder in it.
    created = next((d for d in (data_dir, os.path.join(data_dir, "MNIST")) if not os.path.exists(d)), None)
    try:
        for train in (True, False):
            MNIST(data_dir, train=train, download=True)
    except Exception as e:  # offline, mirror down, unreadable folder: all say the same to the user
        if created:
            shutil.rmtree(created, ignore_errors=True)  # leave nothing half-downloaded
        raise UserError(f"MNIST not found in {data_dir!r} and could not be downloaded ({type(e).__name__}): "
                        "put it there or pass --data-dir / MNIST_DATA_DIR") from None


# ---------------------------------------------------------------- the input contract

def to_input(images_uint8):
    """uint8 digits (white on black, 0-255) -> the standardised float inputs every model takes."""
    return normalize(images_uint8.float() / 255.0)


def normalize(x_unit, out=None):
    """[0,1] pixels -> standardised inputs; to_input for images that are already floats. With `out` (which
    may be x_unit itself), written there, with no new tensor."""
    return torch.div(torch.sub(x_unit, MNIST_MEAN, out=out), MNIST_STD, out=out)


# ---------------------------------------------------------------- augmentation

def augment(x, kinds, strengths):
    """Per-sample random augmentation of a batch x (B,1,28,28) float in [0,1], on x's device.

    `kinds` picks from AUGMENTATIONS; `strengths` (Strengths) holds their ranges."""
    s = strengths
    b, dev = x.shape[0], x.device

    def uniform(lo, hi):
        return torch.rand(b, device=dev) * (hi - lo) + lo

    if "rotate" in kinds or "affine" in kinds:
        angle = torch.deg2rad(uniform(-s.rotate_deg, s.rotate_deg)) if "rotate" in kinds else \
            torch.zeros(b, device=dev)
        if "affine" in kinds:
            scale, shear = uniform(*s.scale), torch.deg2rad(uniform(-s.shear_deg, s.shear_deg))
            shift = (torch.rand(b, 2, device=dev) * 2 - 1) * (s.translate_px * 2 / 28)  # grid coords span 2
        else:
            scale, shear, shift = torch.ones(b, device=dev), torch.zeros(b, device=dev), torch.zeros(b, 2, device=dev)
        # theta maps output to input coordinates: the inverse of rotate(angle) . shear . scale
        cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
        theta = torch.stack([
            torch.stack([cos, sin + cos * tan, shift[:, 0]], 1),
            torch.stack([-sin, cos - sin * tan, shift[:, 1]], 1),
        ], 1) / scale[:, None, None]
        # A new tensor, which the steps below write into in place
        x = F.grid_sample(x, affine_grid_28(theta), mode="bilinear", padding_mode="zeros", align_corners=False)
    else:
        x = x.clone()  # the caller's images stay as they were
    if "stroke" in kinds:
        # Another pen: stroke_prob of the samples, half of them thickened and half thinned, each by a
        # random share (0 to 1) of a 3x3 grey dilation or erosion (imageops' shifted maxima: on a CPU
        # F.max_pool2d at stride 1 takes about twice as long).
        pick = (torch.rand(b, device=dev) < s.stroke_prob).nonzero().flatten()
        picked = x[pick]
        thicker = torch.rand(len(pick), device=dev) < 0.5
        for group, sign in ((thicker, 1), (~thicker, -1)):
            part = picked[group]
            share = torch.rand(len(part), 1, 1, 1, device=dev)
            picked[group] = part + share * (sign * dilate(sign * part, 3) - part)
        x.index_put_((pick,), picked)
    if "lowres" in kinds:
        # A low-resolution scan: lowres_prob of the samples shrunk to a side of lowres_px (the whole
        # 28-pixel field; the digit spans 20/28 of it) and scaled back up bicubic, as predict.py enlarges
        # a small digit (EXPERIMENTS.md, "Augmentations"). Not antialiased, so its cubic is torch's
        # a = -0.75 where imageops.frame's is PIL's a = -0.5: both were measured as they are.
        pick = (torch.rand(b, device=dev) < s.lowres_prob).nonzero().flatten()
        sides = torch.randint(s.lowres_px[0], s.lowres_px[1] + 1, (len(pick),), device=dev)
        for side in sides.unique().tolist():
            rows = pick[sides == side]
            small = F.interpolate(x[rows], size=(side, side), mode="area")
            big = F.interpolate(small, size=(28, 28), mode="bicubic", align_corners=False)
            x.index_put_((rows,), big.clamp(0, 1))  # bicubic overshoots at sharp edges
    if "erase" in kinds:
        area = uniform(*s.erase_area) * 28 * 28
        aspect = torch.exp(uniform(math.log(0.5), math.log(2.0)))
        h = (area * aspect).sqrt().clamp(1, 27)
        w = (area / aspect).sqrt().clamp(1, 27)
        top, left = uniform(0, 1) * (28 - h), uniform(0, 1) * (28 - w)
        r = torch.arange(28, device=dev).float()
        rows = (r[None] >= top[:, None]) & (r[None] < (top + h)[:, None])
        cols = (r[None] >= left[:, None]) & (r[None] < (left + w)[:, None])
        hit = (torch.rand(b, device=dev) < s.erase_prob)[:, None, None]
        x.masked_fill_((rows[:, :, None] & cols[:, None, :] & hit)[:, None], 0.0)
    if "noise" in kinds:
        # Only noise_prob of the samples get noise; drawing it for those alone saves most of the
        # normal sampling, which is costly on a CPU.
        pick = (torch.rand(b, device=dev) < s.noise_prob).nonzero().flatten()
        sigma = uniform(0, s.noise_std_max)[pick, None, None, None]
        x.index_put_((pick,), (x[pick] + torch.randn_like(x[pick]) * sigma).clamp(0, 1))
    return x


def affine_grid_28(theta):
    """F.affine_grid(theta, (B,1,28,28), align_corners=False), equal to it within rounding, as broadcast
    multiply-adds: the batched matmul inside affine_grid costs more on a CPU than the rest of the
    augmentation. Computed as an x plane and a y plane of 28-pixel rows and returned as a (B,28,28,2)
    view of them: broadcast adds along a last dimension of 2 took 2.4 times as long (grid_sample reads
    either layout)."""
    coords = (torch.arange(28, device=theta.device, dtype=theta.dtype) * 2 + 1) / 28 - 1  # pixel centres
    t = theta[:, :, None, None]  # (B,2,1,1,3)
    planes = t[..., 0] * coords + t[..., 1] * coords[:, None]  # (B,2,28,28): x and y at each pixel
    planes += t[..., 2]
    return planes.permute(0, 2, 3, 1)


def printed_count(printed):
    """How many digits with_printed adds to the training set for `printed` (Printed, or None: none)."""
    return 0 if printed is None else (9 * printed.per_digit + printed.ones) * printed.repeats


def with_printed(images, labels, printed):
    """The training set with the printed digits `printed` (Printed) asks for added after it, each rendered
    once and added printed.repeats times: printed_count(printed) in all."""
    digits, printed_labels = printed_set(printed)
    repeats = printed.repeats
    return (torch.cat([images] + [digits.to(images.device)] * repeats),
            torch.cat([labels] + [printed_labels.to(labels.device)] * repeats))


def printed_set(printed):
    """The printed digits `printed` asks for, rendered once per process (read them, never
    write them): like loading MNIST, it is data preparation, which a benchmark's runs share and its
    epoch timing leaves out."""
    return rendered_printed(printed.per_digit, printed.ones)


@functools.lru_cache(maxsize=4)
def rendered_printed(per_digit, ones):
    return printed_digits(per_digit, ones)


def printed_digits(per_digit, ones=None, seed=0):
    """Printed digits, which MNIST's handwriting lacks: (N, 1, 28, 28) uint8 and labels, framed as MNIST's;
    per_digit of each class, `ones` (default per_digit) of the 1, which comes in the most shapes.

    Drawn with the fonts that ship inside Pillow (Aileron, a sans serif, and a small bitmap font) and
    matplotlib (PRINTED_FONTS: DejaVu Sans, Serif and Mono, STIX, Computer Modern), so nothing depends
    on the fonts a machine has; at varied sizes, weights and widths, with the written variants fonts
    and hands use and MNIST rarely shows: the 1 with a base, the 1 with a flag and no base (drawn, as
    these fonts' 1s have bases), the 7 with a crossbar, the dotted and the slashed 0. Its own random
    generator: the training run's draws are untouched."""
    from PIL import Image, ImageDraw, ImageFont

    rng = torch.Generator().manual_seed(seed)
    sizes = (24, 32, 48, 64, 96)
    fonts = [{size: ImageFont.load_default(size=size) for size in sizes}] + [
        {size: ImageFont.truetype(path, size) for size in sizes} for path in matplotlib_fonts()]
    bitmap = ImageFont.load_default_imagefont()
    digits, labels = [], []

    def draw(font, text, stroke=0):
        left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
        pad = max(4, (bottom - top) // 3)
        img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
        ImageDraw.Draw(img).text((pad - left, pad - top), text, fill=255, font=font, stroke_width=stroke,
                                 stroke_fill=255)
        return img, (pad, pad, right - left, bottom - top)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=rng))]

    ones = per_digit if ones is None else ones
    for d in range(10):
        for i in range(ones if d == 1 else per_digit):
            if i % 5 == 4:  # a fifth from the bitmap font, smoothed by scaling it up
                img, _ = draw(bitmap, str(d))
                scale = pick([3, 4, 6, 8])
                img = img.resize((img.width * scale, img.height * scale), Image.BILINEAR)
            else:
                size = pick(sizes)
                img, (x, y, w, h) = draw(pick(fonts)[size], str(d), stroke=pick([0, 0, 1, 2]) * size // 32)
                line = max(2, h // 9)
                variants = {0: ["", "dot", "slash"], 1: ["", "base", "flag", "flag"], 7: ["", "bar"]}
                variant = pick(variants.get(d, [""]))
                pen = ImageDraw.Draw(img)
                if variant == "flag":  # the sans 1, stem and flag with no base: drawn, as few fonts here have it
                    img, line = Image.new("L", (2 * h, 2 * h), 0), round(h * pick([0.08, 0.12, 0.16, 0.2]))
                    flag, angle = h * pick([0.25, 0.35, 0.45]), math.radians(pick([20, 35, 50, 65]))
                    pen = ImageDraw.Draw(img)
                    pen.line((h, h / 2, h, h * 1.5), fill=255, width=line)
                    pen.line((h + line / 3, h / 2, h - flag * math.cos(angle), h / 2 + flag * math.sin(angle)),
                             fill=255, width=line)
                elif variant == "dot":
                    pen.ellipse((x + w / 2 - line, y + h / 2 - line, x + w / 2 + line, y + h / 2 + line), fill=255)
                elif variant == "slash":
                    pen.line((x + w * 0.8, y + h * 0.15, x + w * 0.2, y + h * 0.85), fill=255, width=line)
                elif variant == "base":
                    pen.line((x - w * 0.3, y + h - line / 2, x + w * 1.3, y + h - line / 2), fill=255, width=line)
                elif variant == "bar":
                    pen.line((x + w * 0.25, y + h * 0.55, x + w * 0.9, y + h * 0.55), fill=255, width=line)
            img = img.crop(img.getbbox())
            width = max(1, round(img.width * pick([0.75, 0.9, 1.0, 1.15, 1.3])))  # condensed to wide
            img = img.resize((width, img.height), Image.BILINEAR)
            pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width)
            digits.append(frame(pixels.float() / 255))
            labels.append(d)
    return torch.stack(digits), torch.tensor(labels)


# matplotlib's bundled fonts whose digits are plain digits (its cmmi10 has old-style figures, and the
# symbol and STIX size fonts none): the same files in every matplotlib release since 2.0.
PRINTED_FONTS = [
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf"]


def matplotlib_fonts():
    """Paths of PRINTED_FONTS inside the installed matplotlib, found without importing it (0.13 s of
    every training run's wall time, for the path of a folder)."""
    import importlib.util

    package = importlib.util.find_spec("matplotlib").submodule_search_locations[0]
    folder = os.path.join(package, "mpl-data", "fonts", "ttf")
    return [os.path.join(folder, name) for name in PRINTED_FONTS]


def augmented_images(images, idx, kinds, strengths):
    """images[idx] augmented, as [0,1] floats (what the sample PNGs show)."""
    return augment(images[idx].float() / 255.0, kinds, strengths)


def augmented_epoch(images, labels, order, kinds, strengths, chunk=8192):
    """One epoch's model inputs and labels in `order`, augmented and normalised up front in large chunks.

    Doing it in a few large calls instead of one per step removes dozens of small operations from
    every step (on a GPU, most of its time). Each chunk is normalised straight into the epoch's tensor,
    and augment writes into the tensors it makes. With affine_grid_28's planes, that took the default's
    epoch (62,400 images) from 0.95 s to 0.65 s on the development CPU, with the same values."""
    inputs = torch.empty(len(order), *images.shape[1:], device=images.device)
    for i in range(0, len(order), chunk):
        normalize(augmented_images(images, order[i:i + chunk], kinds, strengths), out=inputs[i:i + chunk])
    return inputs, labels[order]

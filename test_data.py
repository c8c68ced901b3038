"""data.py: reading MNIST, the input contract, and the batched augmentation."""
import os
import shutil
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import cli
import data
import train

STRENGTHS = train.RECIPE.augment_strengths
# The recipe's strengths, with noise on half the samples instead of 1%, so that a batch of 64 is sure
# to show it.
NOISY = replace(STRENGTHS, noise_prob=0.5)


# ---------------------------------------------------------------- reading MNIST

def test_splits_have_mnist_sizes(mnist_train, mnist_test):
    for (images, labels), n in ((mnist_train, 60_000), (mnist_test, 10_000)):
        assert images.shape == (n, 1, 28, 28) and images.dtype == torch.uint8
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert set(labels.unique().tolist()) == set(range(10))


def write_idx(path, array):
    """An IDX file of uint8 data, as MNIST's files are."""
    header = bytes([0, 0, 8, array.dim()]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.numpy().tobytes())


def test_read_idx_round_trip(tmp_path):
    array = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    write_idx(tmp_path / "x", array)
    assert torch.equal(data.read_idx(str(tmp_path / "x")), array)


@pytest.mark.parametrize("damage", ["truncated", "bad magic", "empty"])
def test_read_idx_refuses_damaged_files(damage, tmp_path):
    write_idx(tmp_path / "x", torch.zeros(2, 28, 28, dtype=torch.uint8))
    raw = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes({"truncated": raw[:-5], "bad magic": b"\x01" + raw[1:], "empty": b""}[damage])
    with pytest.raises(cli.UserError, match="not a complete MNIST IDX file"):
        data.read_idx(str(tmp_path / "x"))


# ---------------------------------------------------------------- the input contract

def test_input_contract(mnist_test):
    images = mnist_test[0][:256]
    x = data.to_input(images)
    assert x.dtype == torch.float32 and x.shape == images.shape
    assert torch.allclose(x, (images.float() / 255 - data.MNIST_MEAN) / data.MNIST_STD)
    assert torch.equal(data.normalize(images.float() / 255), x)
    unit = images.float() / 255
    assert data.normalize(unit, out=unit) is unit and torch.equal(unit, x)  # in place, the same values


def test_mnist_statistics_match_the_constants(mnist_train):
    pixels = mnist_train[0].float() / 255
    assert pixels.mean().item() == pytest.approx(data.MNIST_MEAN, abs=5e-4)
    assert pixels.std().item() == pytest.approx(data.MNIST_STD, abs=5e-4)


# ---------------------------------------------------------------- augmentation

@pytest.mark.parametrize("kinds", [[k] for k in data.AUGMENTATIONS] + [list(data.AUGMENTATIONS)])
def test_augmentation_keeps_shape_dtype_range(kinds, mnist_train):
    x = mnist_train[0][:64].float() / 255
    out = data.augment(x, kinds, NOISY)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)


@pytest.mark.parametrize("kinds", [["stroke", "lowres", "erase", "noise"], list(data.AUGMENTATIONS)])
def test_augmentation_leaves_its_input_alone(kinds, mnist_train):
    """augment writes into the tensors it makes, never into the caller's (every kind on every sample)."""
    x = mnist_train[0][:64].float() / 255
    before = x.clone()
    every = replace(STRENGTHS, stroke_prob=1.0, lowres_prob=1.0, erase_prob=1.0, noise_prob=1.0)
    assert not torch.equal(data.augment(x, kinds, every), x)
    assert torch.equal(x, before)


def test_affine_grid_28_is_torchs_affine_grid():
    theta = torch.randn(256, 2, 3) * 0.5
    expected = F.affine_grid(theta, (256, 1, 28, 28), align_corners=False)
    assert torch.allclose(data.affine_grid_28(theta), expected, atol=1e-6)


@pytest.mark.parametrize("kinds", [[k] for k in data.AUGMENTATIONS if k != "lowres"])  # 4 sizes: below
def test_augmentation_differs_per_sample(kinds, mnist_train):
    """64 copies of one image come out as different images: the random parameters are per sample."""
    torch.manual_seed(0)
    same_image = (mnist_train[0][:1].float() / 255).repeat(64, 1, 1, 1)
    changed = [o for o in data.augment(same_image, kinds, NOISY) if not torch.equal(o, same_image[0])]
    distinct = {tuple(o.flatten().tolist()) for o in changed}
    assert len(changed) >= 4  # erasing and noise (p=0.5 each) leave the rest as they were
    assert len(distinct) >= 0.9 * len(changed)  # two erased boxes can, rarely, cover the same pixels


def test_lowres_blurs_its_share_of_the_samples_and_keeps_their_ink(mnist_train):
    """A low-resolution scan: at every side in lowres_px, every picked digit loses the detail finer than
    that many pixels can hold (at least 75% of its power above side / 2 cycles across the field) and
    keeps its ink where it was. Enlarged bicubic and clamped, as predict.py enlarges, a digit keeps a
    few percent more ink than it had (the undershoot beside each edge is cut off: median 1.02-1.07);
    a thin digit's strokes alias at 13 pixels (one of these 256 keeps 70% of its ink sum there), so
    each is held to a looser bound than the typical digit. A picked digit takes one of the lowres_px
    sizes; lowres_prob 0 leaves the batch alone."""
    x = mnist_train[0][:256].float() / 255
    freq = torch.fft.fftfreq(28) * 28  # cycles across the 28-pixel field

    def power_above(im, cycles):
        high = (freq[:, None].abs() > cycles) | (freq[None, :].abs() > cycles)
        return (torch.fft.fft2(im[:, 0]).abs() ** 2 * high).flatten(1).sum(1)

    for side in range(11, 15):
        out = data.augment(x, ["lowres"], replace(STRENGTHS, lowres_prob=1.0, lowres_px=[side, side]))
        assert (power_above(out, side / 2) < 0.25 * power_above(x, side / 2)).all()
        ink = out.flatten(1).sum(1) / x.flatten(1).sum(1)
        assert 0.97 < ink.median() < 1.1 and ink.min() > 0.6 and ink.max() < 1.25
        assert F.cosine_similarity(out.flatten(1), x.flatten(1)).min() > 0.6  # the same digit, blurred
    distinct = {tuple(o.flatten().tolist()) for o in data.augment(x[:1].repeat(64, 1, 1, 1), ["lowres"],
                                                                 replace(STRENGTHS, lowres_prob=1.0))}
    assert 2 <= len(distinct) <= 4  # one per side in lowres_px
    assert torch.equal(data.augment(x, ["lowres"], replace(STRENGTHS, lowres_prob=0.0)), x)


def test_stroke_thickens_or_thins_each_digit_it_picks(mnist_train):
    """Another pen: each picked digit lies, pixel by pixel, between its 3x3 erosion and its dilation, about
    half of them bolder and half thinner; stroke_prob 0 leaves the batch alone."""
    x = mnist_train[0][:512].float() / 255
    out = data.augment(x, ["stroke"], replace(STRENGTHS, stroke_prob=1.0))
    dilated, eroded = F.max_pool2d(x, 3, 1, 1), -F.max_pool2d(-x, 3, 1, 1)
    assert (out <= dilated + 1e-6).all() and (out >= eroded - 1e-6).all()
    ink = out.flatten(1).sum(1) / x.flatten(1).sum(1)
    assert 0.3 < (ink > 1.05).float().mean() < 0.7 and 0.3 < (ink < 0.95).float().mean() < 0.7
    alike = F.cosine_similarity(out.flatten(1), x.flatten(1))
    assert alike.median() > 0.8 and alike.min() > 0.3  # the same digit (a thin one fully eroded is faint)
    assert torch.equal(data.augment(x, ["stroke"], replace(STRENGTHS, stroke_prob=0.0)), x)


def test_strengths_bound_the_augmentation(mnist_train):
    """Zero strengths leave rotation and affine as the identity: the strengths are what is applied."""
    x = mnist_train[0][:16].float() / 255
    still = replace(STRENGTHS, rotate_deg=0.0, translate_px=0.0, scale=[1.0, 1.0], shear_deg=0.0)
    assert torch.allclose(data.augment(x, ["rotate", "affine"], still), x, atol=1e-5)


def test_augmented_epoch_keeps_labels_with_images(mnist_train):
    images, labels = mnist_train
    order = torch.randperm(len(labels))[:3000]
    x, y = data.augmented_epoch(images, labels, order, [], STRENGTHS, chunk=1024)
    assert torch.equal(y, labels[order])
    assert torch.equal(x, data.to_input(images[order]))


def test_no_augmentation_is_identity(mnist_train):
    x = mnist_train[0][:8].float() / 255
    assert torch.equal(data.augment(x, [], STRENGTHS), x)


def test_labels_outside_0_to_9_are_refused(tmp_path, data_dir):
    """A damaged labels file (here one label 10) is one clear error on load, not a crash in training."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = data.mnist_files(data_dir, "test")
    shutil.copy(images, raw)
    damaged = bytearray(open(labels, "rb").read())
    damaged[8 + 123] = 10  # past the 8-byte header
    (raw / os.path.basename(labels)).write_bytes(bytes(damaged))
    with pytest.raises(cli.UserError, match=r"has labels outside 0-9 \(up to 10\): delete it to download afresh"):
        data.load_mnist(str(tmp_path), "test", "cpu")


def test_printed_digits_are_framed_as_mnists_and_reproducible():
    images, labels = data.printed_digits(8)
    assert images.shape == (80, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(labels, torch.arange(10).repeat_interleave(8))
    again, _ = data.printed_digits(8)
    assert torch.equal(images, again)  # its own generator: the same digits each run
    rows = (images[:, 0] > 0).any(2)
    heights = rows.float().sum(1)
    assert heights.max() <= 22 and heights.min() >= 12  # a 20-pixel box, strokes evened


def test_printed_digits_take_their_own_count_of_ones():
    _, labels = data.printed_digits(3, ones=7)
    assert torch.equal(labels.bincount(), torch.tensor([3, 7, 3, 3, 3, 3, 3, 3, 3, 3]))


def test_printed_fonts_ship_with_matplotlib_and_draw_ten_distinct_digits():
    """The fonts printed digits are drawn in come with the installed matplotlib, on any machine."""
    from PIL import ImageFont

    for path in data.matplotlib_fonts():
        font = ImageFont.truetype(path, 32)
        masks = {bytes(font.getmask(str(d))) for d in range(10)}
        assert len(masks) == 10, path


def test_printed_digits_leave_the_training_rng_alone():
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    data.printed_digits(2)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_rendered_printed_renders_once_and_the_same_digits():
    """with_printed's digits are rendered once per process (benchmark runs share them), and are the
    digits printed_digits draws."""
    printed = data.Printed(per_digit=6, ones=9, repeats=4)
    first = data.printed_set(printed)
    assert data.printed_set(data.Printed(per_digit=6, ones=9, repeats=1)) is first  # the repeats do not matter
    fresh = data.printed_digits(6, ones=9)
    assert torch.equal(first[0], fresh[0]) and torch.equal(first[1], fresh[1])


def test_with_printed_leaves_the_shared_rendering_untouched(mnist_train):
    printed = data.Printed(per_digit=3, ones=3, repeats=1)
    rendered = data.printed_set(printed)[0].clone()
    more, _ = data.with_printed(mnist_train[0][:10], mnist_train[1][:10], printed)
    more[10:] = 0  # a caller writing into its training set must not change the next run's digits
    assert torch.equal(data.printed_set(printed)[0], rendered)


def test_with_printed_appends_after_the_given_images(mnist_train):
    images, labels = mnist_train[0][:100], mnist_train[1][:100]
    printed = data.Printed(per_digit=4, ones=6, repeats=2)
    more, more_labels = data.with_printed(images, labels, printed)
    assert len(more) == 100 + 2 * 42 == 100 + data.printed_count(printed)
    assert torch.equal(more[:100], images) and torch.equal(more[100:142], more[142:])
    assert torch.equal(more_labels[:100], labels)

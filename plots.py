"""Every matplotlib figure the scripts write: sample grids, training curves, misclassified digits,
the confusion matrix and the benchmark plot. matplotlib is imported on first use (it costs ~0.5 s).
Each PNG is rendered in memory and written whole (cli.atomic_write), so a full disk or a signal
never leaves half an image."""
import io
import math
import os

import torch
import torch.nn.functional as F

from cli import atomic_write, make_dir

N_SAMPLE_PNGS = 20


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path):
    """Render `fig` as PNG into `path`, whole or not at all, and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    pyplot().close(fig)
    atomic_write(path, buf.getvalue())


def image_grid(images, titles, path, cols=8):
    """Save a labelled grid of (N,1,28,28) images (uint8 or [0,1] floats) as one PNG.

    One canvas and one imshow, titles drawn as text in a strip above each cell: far faster
    than a subplot per image."""
    plt = pyplot()
    images = images.detach().float().cpu()
    images = images / 255.0 if images.max() > 1 else images
    rows, title_h, cell = max(1, math.ceil(len(images) / cols)), 12, 32
    canvas = torch.zeros(rows * (cell + title_h), cols * cell)
    for i, img in enumerate(images):
        top, left = (i // cols) * (cell + title_h) + title_h + 2, (i % cols) * cell + 2
        canvas[top:top + 28, left:left + 28] = img[0]
    scale = 3  # screen pixels per image pixel
    fig = plt.figure(figsize=(canvas.shape[1] * scale / 100, canvas.shape[0] * scale / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    for i, title in enumerate(titles):
        ax.text((i % cols) * cell + cell / 2, (i // cols) * (cell + title_h) + title_h, title,
                color="white", fontsize=8, ha="center", va="bottom")
    save(fig, path)


def gray_png(array_uint8):
    """An (H, W) uint8 array as the bytes of a grayscale PNG of exactly those pixels."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array_uint8).save(buf, "PNG")
    return buf.getvalue()


def digit_png(digit_uint8):
    """A (1, 28, 28) uint8 digit as the bytes of a 28x28 grayscale PNG, exactly the pixels the model takes."""
    return gray_png(digit_uint8[0].numpy())


def save_digit(digit_uint8, path):
    """digit_png written to `path`, whole or not at all."""
    atomic_write(path, digit_png(digit_uint8))


def save_misses(originals, digits, titles, path, cols=4):
    """Each missed image (a gray (H, W) tensor) beside the 28x28 digit the model saw, with its title."""
    plt = pyplot()
    rows = max(1, math.ceil(len(originals) / cols))
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2 * cols * 1.3, rows * 1.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (original, digit, title) in enumerate(zip(originals, digits, titles, strict=True)):
        left, right = axes[i // cols, 2 * (i % cols)], axes[i // cols, 2 * (i % cols) + 1]
        left.imshow(original.numpy(), cmap="gray", vmin=0, vmax=1)
        right.imshow(digit[0].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        left.set_title(title, fontsize=7, loc="left")
    fig.tight_layout()
    save(fig, path)


def save_augmented_samples(images, labels, out_dir):
    """augmented_samples/augmented_grid.png of `images` ([0,1] floats) plus one PNG for each of the first
    N_SAMPLE_PNGS, named by label."""
    plt = pyplot()
    folder = os.path.join(out_dir, "augmented_samples")
    make_dir(folder)
    image_grid(images, [f"label {int(v)}" for v in labels], os.path.join(folder, "augmented_grid.png"))
    for i in range(N_SAMPLE_PNGS):
        buf = io.BytesIO()
        plt.imsave(buf, images[i, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1, format="png")
        atomic_write(os.path.join(folder, f"sample_{i:02d}_label{int(labels[i])}.png"), buf.getvalue())


def save_training_curves(history, path):
    plt = pyplot()

    window = 20  # steps; smooths the per-batch noise
    kernel = torch.ones(1, 1, window) / window

    def smooth(values):
        t = torch.tensor(values, dtype=torch.float32)[None, None]
        return F.conv1d(F.pad(t, (window - 1, 0), mode="replicate"), kernel)[0, 0].numpy()

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    labels = ("training loss", "batch accuracy", "learning rate")
    for ax, key, label in zip(axes, ("loss", "acc", "lr"), labels, strict=True):
        values = [100 * v for v in history[key]] if key == "acc" else history[key]
        ax.plot(values if key == "lr" else smooth(values))
        ax.set_title(label + ("" if key == "lr" else f" ({window}-step mean)"))
        ax.set_xlabel("step")
    fig.tight_layout()
    save(fig, path)


def save_misclassified(images, labels, preds, path, limit=32):
    wrong = (preds != labels).nonzero().flatten()[:limit]
    image_grid(images[wrong], [f"true {int(labels[i])} / pred {int(preds[i])}" for i in wrong], path)


def save_confusion_matrix(confusion, accuracy, path, title="MNIST test set"):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    off_diagonal = confusion.clone().fill_diagonal_(0)  # colour the errors; the diagonal would drown them
    ax.imshow(off_diagonal.numpy(), cmap="Reds")
    for t in range(10):
        for p in range(10):
            ax.text(p, t, int(confusion[t, p]), ha="center", va="center", fontsize=8,
                    color="black" if t != p else "tab:blue")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: {accuracy:.2f}% correct")
    fig.tight_layout()
    save(fig, path)


def save_benchmark_plot(rows, path):
    """Test accuracy against parameters and against seconds per epoch, one point per variant."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "epoch_s", "seconds per epoch")):
        for r in rows:
            ax.scatter(r[key], r["test_acc_mean"], color="tab:red" if r["name"].startswith("ref") else "tab:blue")
            ax.annotate(r["name"], (r[key], r["test_acc_mean"]), fontsize=8, xytext=(4, 2), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy after one epoch, %")
        ax.grid(alpha=0.3)
    axes[0].axvline(25_000, color="gray", linestyle="--", linewidth=1)
    fig.suptitle("blue: this project's variants, red: reference architectures (both with train.py's recipe)")
    fig.tight_layout()
    save(fig, path)

"""Train an MNIST CNN for one augmented epoch, evaluate it, and save a tagged checkpoint.

    python train.py                      # default variant, 1 epoch, CPU or CUDA
    python train.py --model tinynet --epochs 2 --device cpu

The whole dataset sits on the training device as uint8; each epoch is augmented there up front in
large batched calls (grid_sample for rotation/affine, erasing, noise), normalised and sliced into
batches, with no DataLoader and no per-image PIL work. Outputs: model_mnist_<stamp>_acc<acc>.pth
(a plain state_dict), its .json sidecar, augmented_samples/, training_curves.png and
misclassified_grid.png.
"""
import time

PROCESS_START = time.perf_counter()  # wall time counts from here, before the heavy imports

import argparse
import copy
import datetime
import hashlib
import importlib.metadata
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

from model import MODELS, build_model, count_params, model_name, selected_model

# ---------------------------------------------------------------- config (defaults)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
DEFAULT_MODEL = model_name(selected_model)
EPOCHS = 1
BATCH_SIZE = 128
LR = 0.02             # peak of the one-cycle schedule (AdamW)
WEIGHT_DECAY = 1e-4
LABEL_SMOOTHING = 0.1
PCT_START = 0.15     # share of the steps spent warming up to the peak learning rate
DIV_FACTOR = 4.0     # the schedule starts at lr / DIV_FACTOR ...
FINAL_DIV_FACTOR = 100.0  # ... and ends at lr / DIV_FACTOR / FINAL_DIV_FACTOR
# Per-variant batch size and lr, where they differ from the two above. WideNet, the accuracy
# variant, takes four times the steps of the default: at batch 32 its one-epoch test accuracy is
# about 0.15 points higher than at 128 (mean of 5 seeds), for about 1.5x the CPU time.
RECIPES = {"widenet": {"batch_size": 32, "lr": 0.01}}
SEED = 1
AUGMENTATIONS = ("rotate", "affine", "erase", "noise")
DEFAULT_AUGMENT = "rotate,affine,noise"
# Augmentation strengths: mild, since one epoch leaves no time to learn heavy distortions.
ROTATE_DEG = 10.0
TRANSLATE_PX = 2.0
SCALE_RANGE = (0.9, 1.1)
SHEAR_DEG = 8.0
ERASE_PROB, ERASE_AREA = 0.5, (0.02, 0.12)
NOISE_PROB, NOISE_STD_MAX = 0.1, 0.3  # share of samples that get noise; its sigma is drawn from [0, max]
N_SAMPLE_PNGS = 20
HERE = os.path.dirname(os.path.abspath(__file__))


class UserError(Exception):
    """Bad input: run_cli prints the message as one line and exits 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones: those flags explain their default in their own help."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is a UserError (one line) rather than usage text."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


def parse_args(argv=None):
    p = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--model", help=f"variant to train: {', '.join(MODELS)} "
                   f"(default: the --init checkpoint's model, else {DEFAULT_MODEL})")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="passes over the 60k training images")
    p.add_argument("--batch-size", type=int, help=f"training batch size (default: {recipe_help('batch_size')})")
    p.add_argument("--lr", type=float,
                   help=f"peak learning rate of the one-cycle schedule (default: {recipe_help('lr')})")
    p.add_argument("--seed", type=int, default=SEED, help="random seed (same seed, same device: same weights)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto takes CUDA, then MPS, when present, else the CPU")
    p.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR", "./data"),
                   help="MNIST root in torchvision's layout; downloaded there when absent (env MNIST_DATA_DIR)")
    p.add_argument("--out-dir", default=".", help="where the checkpoint, sidecar and PNGs go")
    p.add_argument("--augment", default=DEFAULT_AUGMENT,
                   help=f"comma-separated training augmentations from {', '.join(AUGMENTATIONS)}, or none")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs (samples, curves, misclassified)")
    p.add_argument("--init", metavar="CHECKPOINT", help="start from this checkpoint's weights (fine-tuning)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="capture each full batch's forward and backward as CUDA graphs (needs --device cuda)")
    p.add_argument("--compile", action="store_true",
                   help="train through torch.compile (CUDA graphs on a GPU); compiling takes longer than "
                        "one CPU epoch, so it only pays on a GPU or over many epochs")
    args = p.parse_args(argv)
    validate_args(args)
    return args


def validate_args(args):
    if args.model is None and not args.init:
        args.model = DEFAULT_MODEL  # with --init, load_checkpoint takes the model from the sidecar
    if args.model is not None and args.model not in MODELS:
        raise UserError(f"unknown model {args.model!r}: use --model with one of {', '.join(MODELS)}")
    for flag in ("epochs", "batch_size"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            raise UserError(f"--{flag.replace('_', '-')} must be a positive integer, got {getattr(args, flag)}")
    if args.lr is not None and not 0 < args.lr <= 10:  # also rejects nan and inf
        raise UserError(f"--lr must be a number in (0, 10], got {args.lr}")
    args.augment = parse_augment(args.augment)
    args.device = resolve_device(args.device)
    require_cuda_for_graphs(args)


def recipe(name, batch_size=None, lr=None):
    """(batch size, peak lr) for variant `name`: the values given, else its RECIPES entry, else the defaults."""
    own = RECIPES.get(name, {})
    return (own.get("batch_size", BATCH_SIZE) if batch_size is None else batch_size,
            own.get("lr", LR) if lr is None else lr)


def recipe_help(key):
    """A flag's default as --help shows it, e.g. "128; widenet 32"."""
    default = {"batch_size": BATCH_SIZE, "lr": LR}[key]
    return "; ".join([str(default)] + [f"{name} {own[key]}" for name, own in RECIPES.items() if key in own])


def require_cuda_for_graphs(args):
    if args.cuda_graphs and args.device != "cuda":
        raise UserError(f"--cuda-graphs needs a CUDA device, and the device is {args.device}: drop the flag")


def parse_augment(spec):
    kinds = [] if spec.strip() == "none" else [k.strip() for k in spec.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in AUGMENTATIONS]
    if unknown:
        raise UserError(f"unknown augmentation {unknown[0]!r}: use --augment with {', '.join(AUGMENTATIONS)} or none")
    return kinds


def resolve_device(name):
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[name]:
        raise UserError(f"--device {name} is not available on this machine: use --device cpu or auto")
    return name


# ---------------------------------------------------------------- data

MNIST_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def load_mnist(data_dir, train, device):
    """(images uint8 (N,1,28,28), labels int64) on `device`, from torchvision's MNIST layout.

    The raw IDX files are read directly when present (importing torchvision costs over a second);
    otherwise torchvision.datasets.MNIST downloads them into data_dir first."""
    raw = os.path.join(data_dir, "MNIST", "raw")
    paths = [os.path.join(raw, f) for f in MNIST_FILES[train]]
    if not all(os.path.isfile(p) for p in paths):
        download_mnist(data_dir)
    images, labels = (read_idx(p) for p in paths)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise UserError(f"MNIST files in {raw!r} have unexpected shapes: delete them to download afresh")
    return images.unsqueeze(1).to(device), labels.long().to(device)


def read_idx(path):
    """An IDX file (the MNIST format: magic, dims, then uint8 data) as a uint8 tensor."""
    with open(path, "rb") as f:
        data = f.read()
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


def to_unit(images_uint8):
    return images_uint8.float() / 255.0


def normalize(x_unit):
    """[0,1] pixels to the standardised inputs every model is trained on."""
    return (x_unit - MNIST_MEAN) / MNIST_STD


def augment(x, kinds):
    """Per-sample random augmentation of a batch x (B,1,28,28) float in [0,1], on x's device."""
    b, dev = x.shape[0], x.device

    def uniform(lo, hi):
        return torch.rand(b, device=dev) * (hi - lo) + lo

    if "rotate" in kinds or "affine" in kinds:
        angle = torch.deg2rad(uniform(-ROTATE_DEG, ROTATE_DEG)) if "rotate" in kinds else torch.zeros(b, device=dev)
        if "affine" in kinds:
            scale, shear = uniform(*SCALE_RANGE), torch.deg2rad(uniform(-SHEAR_DEG, SHEAR_DEG))
            shift = (torch.rand(b, 2, device=dev) * 2 - 1) * (TRANSLATE_PX * 2 / 28)  # grid coords span 2
        else:
            scale, shear, shift = torch.ones(b, device=dev), torch.zeros(b, device=dev), torch.zeros(b, 2, device=dev)
        # theta maps output to input coordinates: the inverse of rotate(angle) . shear . scale
        cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
        theta = torch.stack([
            torch.stack([cos, sin + cos * tan, shift[:, 0]], 1),
            torch.stack([-sin, cos - sin * tan, shift[:, 1]], 1),
        ], 1) / scale[:, None, None]
        grid = affine_grid_28(theta)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if "erase" in kinds:
        area = uniform(*ERASE_AREA) * 28 * 28
        aspect = torch.exp(uniform(math.log(0.5), math.log(2.0)))
        h = (area * aspect).sqrt().clamp(1, 27)
        w = (area / aspect).sqrt().clamp(1, 27)
        top, left = uniform(0, 1) * (28 - h), uniform(0, 1) * (28 - w)
        r = torch.arange(28, device=dev).float()
        rows = (r[None] >= top[:, None]) & (r[None] < (top + h)[:, None])
        cols = (r[None] >= left[:, None]) & (r[None] < (left + w)[:, None])
        hit = (torch.rand(b, device=dev) < ERASE_PROB)[:, None, None]
        x = x.masked_fill((rows[:, :, None] & cols[:, None, :] & hit)[:, None], 0.0)
    if "noise" in kinds:
        # Only NOISE_PROB of the samples get noise; drawing it for those alone saves most of the
        # normal sampling, which is costly on a CPU.
        pick = (torch.rand(b, device=dev) < NOISE_PROB).nonzero().flatten()
        sigma = uniform(0, NOISE_STD_MAX)[pick, None, None, None]
        x = x.index_put((pick,), (x[pick] + torch.randn_like(x[pick]) * sigma).clamp(0, 1))
    return x


def affine_grid_28(theta):
    """F.affine_grid(theta, (B,1,28,28), align_corners=False) as broadcast multiply-adds:
    the batched matmul inside affine_grid costs more on a CPU than the rest of the augmentation."""
    coords = (torch.arange(28, device=theta.device, dtype=theta.dtype) * 2 + 1) / 28 - 1  # pixel centres
    t = theta[:, None, None]  # (B,1,1,2,3)
    return t[..., 0] * coords[None, None, :, None] + t[..., 1] * coords[None, :, None, None] + t[..., 2]


def training_batch(images, labels, idx, kinds):
    """Gather, augment and normalise one batch; returns (inputs float, labels, augmented [0,1] images)."""
    raw = augment(to_unit(images[idx]), kinds)
    return normalize(raw), labels[idx], raw


def augmented_epoch(images, labels, order, kinds, chunk=8192):
    """One epoch's inputs and labels in `order`, augmented and normalised up front in large chunks.

    Per sample the result is what training_batch gives; doing it in a few large calls instead of
    one per step removes dozens of small operations from every step (on a GPU, most of its time)."""
    parts = [training_batch(images, labels, order[i:i + chunk], kinds)[:2] for i in range(0, len(order), chunk)]
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


# ---------------------------------------------------------------- training and evaluation

class OneCycleAdamW:
    """AdamW under a one-cycle cosine schedule: the same updates, learning rates and cycled beta1 as
    torch.optim.AdamW with lr_scheduler.OneCycleLR (test_model.py checks this step by step), written out
    on foreach kernels because torch.optim's first call imports torch._dynamo: 1.4 s of a 9 s CPU run."""

    def __init__(self, params, max_lr, total_steps, beta2=0.999, eps=1e-8, weight_decay=WEIGHT_DECAY):
        self.params = [p for p in params if p.requires_grad]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.max_lr, self.total_steps = max_lr, total_steps
        self.beta2, self.eps, self.weight_decay = beta2, eps, weight_decay
        self.steps_done = 0

    def schedule(self, step):
        """(lr, beta1) at `step`: over the first PCT_START of the steps lr rises from max_lr / DIV_FACTOR
        to max_lr while beta1 falls from 0.95 to 0.85; then lr decays to max_lr / DIV_FACTOR /
        FINAL_DIV_FACTOR and beta1 returns to 0.95. Cosine-shaped, as OneCycleLR computes them."""
        initial = self.max_lr / DIV_FACTOR
        peak_step = PCT_START * self.total_steps - 1
        if step <= peak_step:
            pct, lrs, betas = step / peak_step, (initial, self.max_lr), (0.95, 0.85)
        else:
            pct = (step - peak_step) / (self.total_steps - 1 - peak_step)
            lrs, betas = (self.max_lr, initial / FINAL_DIV_FACTOR), (0.85, 0.95)
        weight = (1 + math.cos(math.pi * pct)) / 2  # 1 at the phase start, 0 at its end
        return tuple(end + (start - end) * weight for start, end in (lrs, betas))

    @torch.no_grad()
    def step(self):
        """One AdamW update of every parameter; returns the learning rate it used."""
        lr, beta1 = self.schedule(self.steps_done)
        self.steps_done += 1
        grads = [p.grad for p in self.params]
        torch._foreach_mul_(self.params, 1 - lr * self.weight_decay)
        torch._foreach_lerp_(self.exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(self.exp_avg_sq, self.beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, 1 - self.beta2)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, math.sqrt(1 - self.beta2 ** self.steps_done))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(self.params, self.exp_avg, denom, -lr / (1 - beta1 ** self.steps_done))
        return lr

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def batch_slices(n, batch_size):
    """Start/end of each batch; a last batch of one sample joins the one before (BatchNorm needs two)."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


def graphed(model, sample):
    """`model` with its forward and backward, for batches shaped like `sample`, captured as CUDA graphs:
    one launch each per step instead of dozens (kernel launches, not arithmetic, bound a small model's
    GPU step). The parameters and buffers are the model's own; other shapes go through `model` itself."""
    wrapper = torch.nn.Sequential(model)  # make_graphed_callables patches the forward of what it is given
    with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):  # graphs need the cache off
        return torch.cuda.make_graphed_callables(wrapper, (sample,))


def compiled(model, device):
    """The model through torch.compile for training; it shares the model's parameters and buffers, so
    the plain model is what is evaluated and saved (its state_dict keys stay unprefixed)."""
    return torch.compile(model, mode="reduce-overhead" if device == "cuda" else "default")


def trainable(model, args):
    """What train() runs: the model itself, or its torch.compile wrapper with --compile."""
    return compiled(model, args.device) if args.compile else model


class NonFiniteLoss(Exception):
    pass


def train(model, images, labels, epochs, batch_size, lr, kinds, log=print, cuda_graphs=False):
    """Train in place; returns per-step history {loss, acc, lr} and the final epoch's running accuracy.
    With cuda_graphs (CUDA only), full batches run through graphed(model).

    Per-step loss and correct counts stay on the device (no sync per step); they are checked for
    NaN/inf every 50 steps, which names the first bad step."""
    from tqdm import tqdm

    n, dev = len(images), images.device
    slices = batch_slices(n, batch_size)
    total = epochs * len(slices)
    opt = OneCycleAdamW(model.parameters(), lr, total)
    losses = torch.zeros(total, device=dev)
    correct = torch.zeros(total, device=dev)
    sizes = torch.tensor([e - s for s, e in slices] * epochs, dtype=torch.float32)
    lrs = []
    tty = sys.stderr.isatty()
    check_every, log_every = 50, max(1, total // 5)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda",
                              cache_enabled=not cuda_graphs)  # graphs need the cast cache off

    def running_acc(step):
        """Accuracy over the current epoch's batches up to `step`."""
        seen = slice(step - (step - 1) % len(slices) - 1, step)
        return 100 * correct[seen].sum().item() / sizes[seen].sum().item()

    model.train()
    bar = tqdm(total=total, disable=not tty, unit="step", leave=False)
    step, full_batch = 0, None
    for epoch in range(epochs):
        epoch_x, epoch_y = augmented_epoch(images, labels, torch.randperm(n, device=dev), kinds)
        if cuda_graphs and full_batch is None:
            full_batch = graphed(model, epoch_x[:batch_size])
        for s, e in slices:
            x, y = epoch_x[s:e], epoch_y[s:e]
            forward = full_batch if full_batch is not None and e - s == batch_size else model
            with autocast:
                out = forward(x)
            # The models return log-probabilities, so cross_entropy's log_softmax is a no-op on them.
            loss = F.cross_entropy(out.float(), y, label_smoothing=LABEL_SMOOTHING)
            opt.zero_grad()
            loss.backward()
            lrs.append(opt.step())
            losses[step] = loss.detach()
            correct[step] = (out.argmax(1) == y).sum()
            step += 1
            if step % check_every == 0 or step == total:
                check_finite(losses[:step])
                if tty:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{losses[step - 1].item():.3f}",
                                    acc=f"{running_acc(step):.2f}%")
                    bar.update(step - bar.n)
            if not tty and (step % log_every == 0 or step == total):
                log(f"epoch {epoch + 1}/{epochs} step {step}/{total} loss {losses[step - 1].item():.4f} "
                    f"running acc {running_acc(step):.2f}%")
    bar.close()
    return {"loss": losses.tolist(), "acc": (correct.cpu() / sizes).tolist(), "lr": lrs}, running_acc(total)


def check_finite(losses):
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        raise NonFiniteLoss(f"loss became {losses[bad[0, 0]].item()} at step {bad[0, 0].item() + 1}: "
                            "lower --lr or check the data")


@torch.inference_mode()
def predict(model, images, batch_size=1000):
    """Predicted class of every image (uint8, N,1,28,28), in eval mode."""
    model.eval()
    return torch.cat([model(normalize(to_unit(images[i:i + batch_size]))).argmax(1)
                      for i in range(0, len(images), batch_size)])


# ---------------------------------------------------------------- outputs

def checkpoint_stem(timestamp, test_acc):
    return f"model_mnist_{timestamp}_acc{test_acc:.2f}"


def atomic_write(path, data):
    """Write bytes to a temp file beside `path`, then rename: a reader never sees half a file.

    The temp file is created as open() creates any file, mode 0o666 less the user's umask (mkstemp
    would make it 0o600); O_EXCL and a random name keep it our own."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".tmp_{os.urandom(4).hex()}_{os.path.basename(path)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_checkpoint(model, out_dir, metadata):
    """Write <stem>.pth (plain state_dict) then its <stem>.json sidecar; returns the .pth path."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    weights = buf.getvalue()
    stem = checkpoint_stem(metadata["timestamp"], metadata["test_acc"])
    pth = os.path.join(out_dir, stem + ".pth")
    sidecar = dict(metadata, checkpoint=stem + ".pth", sha256=hashlib.sha256(weights).hexdigest())
    atomic_write(pth, weights)
    atomic_write(os.path.join(out_dir, stem + ".json"), (json.dumps(sidecar, indent=2) + "\n").encode())
    return pth


def package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def sidecar_path(pth):
    return os.path.splitext(pth)[0] + ".json"


def read_sidecar(pth):
    """The checkpoint's JSON sidecar as a dict; {} when there is none."""
    path = sidecar_path(pth)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        raise UserError(f"sidecar {path} is not readable JSON: delete it and pass --model NAME") from None


def load_checkpoint(pth, name=None):
    """(model, sidecar) rebuilt from a .pth and its sidecar, always with weights_only=True.

    `name` picks the variant when there is no sidecar. Every way this can go wrong (missing,
    truncated or tampered file, another variant's weights) is a one-line UserError."""
    if not os.path.isfile(pth):
        raise UserError(f"checkpoint {pth!r} not found: check the path")
    sidecar = read_sidecar(pth)
    with open(pth, "rb") as f:
        weights = f.read()
    if sidecar.get("sha256") and hashlib.sha256(weights).hexdigest() != sidecar["sha256"]:
        raise UserError(f"{pth} does not match the sha256 in its sidecar: the file is corrupt or was "
                        "replaced; download it again")
    name = name or sidecar.get("model")
    if name is None:
        raise UserError(f"no sidecar {sidecar_path(pth)!r} says which model {pth} is: pass --model NAME")
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}: use --model with one of {', '.join(MODELS)}")
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception:
        raise UserError(f"{pth} is not a readable PyTorch checkpoint (truncated or corrupt): "
                        "download or train it again") from None
    model = build_model(name)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError):
        raise UserError(f"{pth} does not hold {name!r} weights (another variant?): pass the right --model") from None
    return model, sidecar


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def check_out_dir(out_dir):
    """Create out_dir if needed and prove it is writable, before any training time is spent."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise UserError(f"cannot write to --out-dir {out_dir!r} ({e.strerror}): choose a writable folder") from None


def print_summary(model):
    from torchsummary import summary

    # On a CPU copy: torchsummary runs a forward pass, which would move the real model's BN statistics;
    # and with the RNG forked, as its random input would otherwise shift every later random draw.
    with torch.random.fork_rng(devices=[]):
        summary(copy.deepcopy(model).cpu(), (1, 28, 28), device="cpu")


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, imported on first use (it costs ~0.5 s)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


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
    fig.savefig(path)
    plt.close(fig)


def save_augmented_samples(images, labels, kinds, out_dir, seed=SEED):
    """augmented_samples/augmented_grid.png plus one PNG per sample, from the first 32 training images.

    Uses its own RNG stream, so making the samples never changes the training run."""
    plt = pyplot()
    folder = os.path.join(out_dir, "augmented_samples")
    os.makedirs(folder, exist_ok=True)
    with torch.random.fork_rng(devices=[images.device] if images.device.type == "cuda" else []):
        torch.manual_seed(seed)
        _, y, raw = training_batch(images, labels, torch.arange(32, device=images.device), kinds)
    image_grid(raw, [f"label {int(v)}" for v in y], os.path.join(folder, "augmented_grid.png"))
    for i in range(N_SAMPLE_PNGS):
        plt.imsave(os.path.join(folder, f"sample_{i:02d}_label{int(y[i])}.png"), raw[i, 0].cpu().numpy(),
                   cmap="gray", vmin=0, vmax=1)


def save_training_curves(history, path):
    plt = pyplot()

    window = 20  # steps; smooths the per-batch noise
    kernel = torch.ones(1, 1, window) / window

    def smooth(values):
        t = torch.tensor(values, dtype=torch.float32)[None, None]
        return F.conv1d(F.pad(t, (window - 1, 0), mode="replicate"), kernel)[0, 0].numpy()

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for ax, key, label in zip(axes, ("loss", "acc", "lr"), ("training loss", "batch accuracy", "learning rate")):
        values = [100 * v for v in history[key]] if key == "acc" else history[key]
        ax.plot(values if key == "lr" else smooth(values))
        ax.set_title(label + ("" if key == "lr" else f" ({window}-step mean)"))
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_misclassified(images, labels, preds, path, limit=32):
    wrong = (preds != labels).nonzero().flatten()[:limit]
    image_grid(images[wrong], [f"true {int(labels[i])} / pred {int(preds[i])}" for i in wrong], path)


# ---------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    # Every check that can fail runs before training, and nothing is written until training has finished.
    torch.manual_seed(args.seed)  # before the model is built, so the seed sets the initial weights too
    model = load_checkpoint(args.init, args.model)[0] if args.init else build_model(args.model)
    args.model = model_name(model)
    args.batch_size, args.lr = recipe(args.model, args.batch_size, args.lr)
    train_x, train_y = load_mnist(args.data_dir, True, args.device)
    test_x, test_y = load_mnist(args.data_dir, False, args.device)
    check_out_dir(args.out_dir)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True

    model = model.to(args.device, memory_format=torch.channels_last)
    n_params = count_params(model)
    print_summary(model)
    print(f"model {args.model}: {n_params:,} params | device {args.device} | epochs {args.epochs} | "
          f"batch {args.batch_size} | lr {args.lr} | augment {','.join(args.augment) or 'none'} | seed {args.seed}"
          + (f" | init {args.init}" if args.init else ""))

    t_train = time.perf_counter()
    history, train_acc = train(trainable(model, args), train_x, train_y, args.epochs, args.batch_size, args.lr,
                               args.augment, cuda_graphs=args.cuda_graphs)
    train_s = time.perf_counter() - t_train
    preds = predict(model, test_x)
    test_acc = 100 * (preds == test_y).float().mean().item()
    print(f"train accuracy (running, last epoch): {train_acc:.2f}% | test accuracy: {test_acc:.2f}% "
          f"({int((preds != test_y).sum())} of {len(test_y)} wrong) | training {train_s:.1f}s")

    metadata = {
        "model": args.model, "params": n_params, "train_acc": round(train_acc, 4), "test_acc": round(test_acc, 4),
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "augment": args.augment, "label_smoothing": LABEL_SMOOTHING, "init": args.init, "device": args.device,
        "cuda_graphs": args.cuda_graphs, "compile": args.compile,
        "torch": torch.__version__, "torchvision": package_version("torchvision"), "git_commit": git_commit(),
        "timestamp": datetime.datetime.now().strftime("%Y%m%d_%H%M%S"), "train_s": round(train_s, 3),
    }
    metadata["wall_s"] = round(time.perf_counter() - PROCESS_START, 3)
    path = save_checkpoint(model, args.out_dir, metadata)
    print(f"saved {path} (+ .json sidecar) | wall {metadata['wall_s']:.1f}s from process start")
    # The PNGs come after the checkpoint: they take a second (matplotlib), and the model should not wait.
    if not args.no_plots:
        save_augmented_samples(train_x, train_y, args.augment, args.out_dir)
        save_training_curves(history, os.path.join(args.out_dir, "training_curves.png"))
        save_misclassified(test_x, test_y, preds, os.path.join(args.out_dir, "misclassified_grid.png"))
        print(f"saved augmented_samples/, training_curves.png, misclassified_grid.png in {args.out_dir}")
    return path


def run_cli(entry, argv=None):
    """Turn the errors a user can cause into one line on stderr and an exit code, never a traceback."""
    try:
        entry(argv)
        sys.stdout.flush()  # inside the try, so that a closed pipe is caught here rather than at exit
    except BrokenPipeError:
        # Whoever read the output has gone (`| head`): stop quietly, as Unix tools do, with the
        # leftover output sent nowhere so that Python's flush at exit does not print a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)  # 128 + SIGPIPE, the shell's code for this
    except UserError as e:
        fail(f"error: {e}", 2)
    except NonFiniteLoss as e:
        fail(f"error: training stopped: {e}", 1)
    except KeyboardInterrupt:
        fail("interrupted: no checkpoint was written", 130)


def fail(message, code):
    print(message, file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    run_cli(main)

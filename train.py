"""Train an MNIST CNN for one augmented epoch, evaluate it, and save a tagged checkpoint.

    python train.py                      # default variant, 1 epoch, CPU or CUDA
    python train.py --model tinynet --epochs 2 --device cpu

The whole dataset sits on the training device as uint8; each epoch is augmented there up front in
large batched calls (data.py), normalised and sliced into batches, with no DataLoader and no
per-image PIL work. Outputs: model_mnist_<stamp>_acc<acc>.pth (a plain state_dict), its .json
sidecar, augmented_samples/, training_curves.png and misclassified_grid.png.
"""
import time

PROCESS_START = time.perf_counter()  # wall time counts from here, before the heavy imports

import cli

if __name__ == "__main__":
    cli.exit_quietly_on_signals()  # Ctrl-C while torch imports: one line, not a traceback

import copy
import math
import os
import sys
from dataclasses import replace

import torch
import torch.nn.functional as F

import data
import plots
from checkpoint import load_checkpoint, provenance, save_checkpoint, timestamp
from inference import predicted_classes
from model import MODELS, build_model, count_params, model_name, selected_model
from optimizer import AdamW, OneCycle, StepGraph, build_optimizer
from recipes import Recipe

# ---------------------------------------------------------------- config: the recipe
DEFAULT_MODEL = model_name(selected_model)
EPOCHS = 1
SEED = 1
MAX_EPOCHS, MAX_SEED = 1000, 2**64 - 1  # beyond these torch overflows, or a run would take months
DIVERGED_BELOW = 20.0  # test accuracy in %; chance is 10%: a run that ends under this has failed

# Mild augmentation: one epoch leaves no time to learn heavy distortions, and predict.py centres users'
# digits by mass itself. Noise on 1% keeps the model steady under noise; "stroke" stands for another pen
# and "lowres" for a low-resolution scan; the printed digits have more of the 1, which comes in the most
# shapes. Why each value: EXPERIMENTS.md, "The default recipe" and "Augmentations".
RECIPE = Recipe(
    batch_size=128,
    lr=0.02,
    optimizer=AdamW(weight_decay=1e-4, beta2=0.999, eps=1e-8),
    schedule=OneCycle(pct_start=0.1, div_factor=4.0, final_div_factor=100.0, beta1=(0.95, 0.85)),
    label_smoothing=0.1,
    augment=("rotate", "affine", "stroke", "noise", "lowres"),
    augment_strengths=data.Strengths(rotate_deg=7.0, translate_px=1.0, scale=(0.9, 1.1), shear_deg=5.0,
                                     stroke_prob=0.3, erase_prob=0.5, erase_area=(0.02, 0.12), noise_prob=0.01,
                                     noise_std_max=0.3, lowres_prob=0.2, lowres_px=(11, 14)),
    printed=data.Printed(per_digit=50, ones=150, repeats=4),
)
# Each variant's recipe: RECIPE, with what differs said here. widenet and tinynet are the MNIST-accuracy
# variants: more, smaller steps pay for them, they leave out the augmentations for users' digits, and
# widenet's AdamW forgets squared gradients faster (beta2 0.99: 0.999 averages over about half its
# epoch). EXPERIMENTS.md, "The accuracy variants".
VARIANT_RECIPES = {
    "widenet": replace(RECIPE, batch_size=32, lr=0.01, optimizer=replace(RECIPE.optimizer, beta2=0.99),
                       augment=tuple(k for k in RECIPE.augment if k not in ("stroke", "lowres"))),
    "tinynet": replace(RECIPE, batch_size=64, lr=0.015, augment=tuple(k for k in RECIPE.augment if k != "lowres")),
}
# Named recipes any variant can train with in place of its own (--recipe NAME): changes to RECIPE. "lean"
# takes 195 steps an epoch instead of 488: on a GPU the number of steps, not arithmetic, sets the time.
RECIPES = {"lean": {"batch_size": 320, "lr": 0.025}}


def recipe(name, recipe_name=None, **overrides):
    """The full recipe for variant `name`: its VARIANT_RECIPES entry, else RECIPE (or RECIPE with the named
    recipe RECIPES[recipe_name] instead), then the overrides that are not None (what the command line gave)."""
    base = VARIANT_RECIPES.get(name, RECIPE) if recipe_name is None else replace(RECIPE, **RECIPES[recipe_name])
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def recipe_help(key):
    """A flag's default as --help shows it, e.g. "128; widenet 32" (a tuple comma-joined, as the flag takes it)."""
    def shown(value):
        return ",".join(value) if isinstance(value, tuple) else str(value)
    default = getattr(RECIPE, key)
    return "; ".join([shown(default)] + [f"{n} {shown(getattr(own, key))}" for n, own in VARIANT_RECIPES.items()
                                         if getattr(own, key) != default])


def describe_recipes():
    return "; ".join(f"{n}: " + ", ".join(f"{k} {v}" for k, v in own.items()) for n, own in RECIPES.items())


def build_parser():
    p = cli.parser(__doc__)
    p.add_argument("--model", metavar="NAME", help=f"variant to train: {', '.join(MODELS)} "
                   f"(default: the --init checkpoint's model, else {DEFAULT_MODEL})")
    p.add_argument("--epochs", type=int, default=EPOCHS, metavar="N",
                   help=f"passes over the 60k training images, 1 to {MAX_EPOCHS}")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help=f"training batch size, at most the training set (default: {recipe_help('batch_size')})")
    p.add_argument("--lr", type=float, help=f"peak learning rate of the one-cycle schedule, in (0, 10] "
                   f"(default: {recipe_help('lr')})")
    p.add_argument("--recipe", choices=sorted(RECIPES),
                   help=f"train with a named recipe instead of the variant's own: {describe_recipes()}")
    p.add_argument("--seed", type=int, default=SEED, metavar="N",
                   help="random seed, 0 to 2**64-1 (same seed, device and thread count: same weights)")
    cli.add_device(p)
    cli.add_data_dir(p)
    cli.add_out_dir(p, "the checkpoint, sidecar and PNGs go")
    p.add_argument("--augment", metavar="LIST", help="comma-separated training augmentations from "
                   f"{', '.join(data.AUGMENTATIONS)}, or none (default: {recipe_help('augment')})")
    p.add_argument("--holdout", type=int, default=0, metavar="N",
                   help="hold out the last N training images as a validation set, which choices are made on (the "
                        "test set then only reports); 0 trains on all 60,000")
    p.add_argument("--no-printed", action="store_true",
                   help="train on MNIST alone, without the printed digits the recipe adds to the training set")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs (samples, curves, misclassified)")
    p.add_argument("--init", metavar="CHECKPOINT", help="start from this checkpoint's weights (fine-tuning)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="capture each full batch's whole training step, optimizer included, as one CUDA graph "
                        "(needs --device cuda)")
    p.add_argument("--compile", action="store_true",
                   help="train through torch.compile (CUDA graphs on a GPU); compiling takes longer than "
                        "one CPU epoch, so it only pays on a GPU or over many epochs")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    validate_args(args)
    return args


def validate_args(args):
    if args.model is None and not args.init:
        args.model = DEFAULT_MODEL  # with --init, load_checkpoint takes the model from the sidecar
    if args.model is not None and args.model not in MODELS:
        raise cli.UserError(f"unknown model {args.model!r}: use --model with one of {', '.join(MODELS)}")
    check_training_flags(args.batch_size, args.lr, args.epochs, args.seed)
    cli.check_range("--holdout", args.holdout, 0, 50_000)
    if args.augment is not None:
        args.augment = parse_augment(args.augment)
    args.device = cli.resolve_device(args.device)
    require_cuda_for_graphs(args.cuda_graphs, args.device)


def check_training_flags(batch_size, lr, epochs=None, seed=None):
    """The bounds of the flags train.py and benchmark.py share (None: not given). The batch size is checked
    against the data and the model later, by check_batch_size, still before any training."""
    cli.check_range("--epochs", epochs, 1, MAX_EPOCHS)
    cli.check_range("--seed", seed, 0, MAX_SEED)
    if batch_size is not None and batch_size <= 0:
        raise cli.UserError(f"--batch-size must be a positive integer, got {batch_size}")
    if lr is not None and not 0 < lr <= 10:  # also rejects nan and inf
        raise cli.UserError(f"--lr must be a number in (0, 10], got {lr}")


def check_batch_size(batch_size, n_train, model):
    """A batch no larger than the training set, and of two or more where the model's BatchNorm
    normalises a single value per channel (after a fully connected layer or a 1x1 map)."""
    if batch_size > n_train:
        raise cli.UserError(f"--batch-size {batch_size:,} is larger than the training set ({n_train:,} images): "
                            "use a smaller one")
    if batch_size == 1 and batchnorm_needs_pairs(model):
        raise cli.UserError(f"--batch-size 1 cannot train {model_name(model)}: its BatchNorm needs at least 2 "
                            "samples per batch; use --batch-size 2 or more")


def batchnorm_needs_pairs(model):
    """Whether some BatchNorm layer of `model` sees one value per channel per sample."""
    sizes = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: sizes.append(inp[0][0, 0].numel()))
             for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    with torch.no_grad():
        model.eval()(torch.zeros(1, 1, 28, 28))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return 1 in sizes


def require_cuda_for_graphs(cuda_graphs, device):
    if cuda_graphs and device != "cuda":
        raise cli.UserError(f"--cuda-graphs needs a CUDA device, and the device is {device}: drop the flag")


def parse_augment(spec):
    kinds = () if spec.strip() == "none" else tuple(k.strip() for k in spec.split(",") if k.strip())
    unknown = [k for k in kinds if k not in data.AUGMENTATIONS]
    if unknown:
        raise cli.UserError(f"unknown augmentation {unknown[0]!r}: use --augment with "
                            f"{', '.join(data.AUGMENTATIONS)} or none")
    return kinds


# ---------------------------------------------------------------- training

def batch_slices(n, batch_size):
    """Start/end of each batch; a last batch of one sample joins the one before (BatchNorm needs two)."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


def trainable(model, compile_model, device):
    """What train() runs: the model itself, or with compile_model its torch.compile wrapper, which shares the
    model's parameters and buffers (the plain model is what is evaluated and saved)."""
    if not compile_model:
        return model
    return torch.compile(model, mode="reduce-overhead" if device == "cuda" else "default")


class NonFiniteLoss(cli.RunFailed):
    pass


def training_step(model, opt, config, cuda_graphs):
    """The function train() calls once per batch, chosen here once: (x, y) -> (output, loss), after forward,
    loss, backward and the optimizer's update. With cuda_graphs (CUDA only) the optimizer reads its schedule
    from the device and each full batch's whole step is one replay of a StepGraph; a last, smaller batch
    runs eagerly."""
    dev_type = next(model.parameters()).device.type
    autocast = torch.autocast(dev_type, dtype=torch.bfloat16, enabled=dev_type == "cuda",
                              cache_enabled=not cuda_graphs)  # graphs need the cast cache off
    if cuda_graphs:
        opt.on_device()

    def eager(x, y):
        with autocast:
            out = model(x)
        # The models return log-probabilities, so cross_entropy's log_softmax is a no-op on them.
        loss = F.cross_entropy(out.float(), y, label_smoothing=config.label_smoothing)
        opt.zero_grad()  # grads set to None: captured, backward then writes (not adds) them each replay
        loss.backward()
        opt.step_on_device() if cuda_graphs else opt.step()
        # Detached: a graph kept alive by out's grad_fn holds the AccumulateGrad nodes of the
        # side-stream warm-up steps, which torch warns breaks capture.
        return out.detach(), loss.detach()

    if not cuda_graphs:
        return eager
    graph = None

    def graphed(x, y):
        nonlocal graph
        if len(x) != config.batch_size:
            return eager(x, y)
        graph = graph or StepGraph(eager, x, y)
        return graph(x, y)

    return graphed


class Metrics:
    """Per-step loss and correct counts, kept on the device (no sync per step); counted are the images the
    caller gave, not the printed digits the recipe adds."""

    def __init__(self, total, steps_per_epoch, device):
        self.losses, self.correct, self.sizes = (torch.zeros(total, device=device) for _ in range(3))
        self.steps_per_epoch, self.step = steps_per_epoch, 0

    def record(self, loss, out, y, counted):
        self.losses[self.step] = loss
        self.correct[self.step] = ((out.argmax(1) == y) & counted).sum()
        self.sizes[self.step] = counted.sum()
        self.step += 1

    def last_loss(self):
        return self.losses[self.step - 1].item()

    def running_acc(self):
        """Accuracy over the current epoch's batches so far."""
        seen = slice(self.step - (self.step - 1) % self.steps_per_epoch - 1, self.step)
        return 100 * self.correct[seen].sum().item() / max(1.0, self.sizes[seen].sum().item())

    def check_finite(self):
        """A NaN or infinite loss so far stops the run, naming its first step."""
        bad = (~torch.isfinite(self.losses[:self.step])).nonzero()
        if len(bad):
            raise NonFiniteLoss(f"training stopped: loss became {self.losses[bad[0, 0]].item()} at step "
                                f"{bad[0, 0].item() + 1}: lower --lr or check the data")

    def history(self, lrs):
        return {"loss": self.losses.tolist(), "acc": (self.correct / self.sizes.clamp_min(1)).tolist(), "lr": lrs}


class Progress:
    """What a run shows as it trains: a tqdm bar on a terminal, else five log lines (the last at the end).
    Every CHECK_EVERY steps, and at the end, the losses so far are checked for NaN and inf."""
    CHECK_EVERY = 50

    def __init__(self, metrics, epochs, log):
        from tqdm import tqdm

        total = len(metrics.losses)
        self.metrics, self.epochs, self.total, self.log = metrics, epochs, total, log
        self.tty = sys.stderr.isatty()
        self.log_at = {math.ceil(total * k / 5) for k in range(1, 6)}
        self.bar = tqdm(total=total, disable=not self.tty, unit="step", leave=False)

    def update(self, epoch):
        step, m = self.metrics.step, self.metrics
        if step % self.CHECK_EVERY == 0 or step == self.total:
            m.check_finite()
            if self.tty:
                self.bar.set_postfix(epoch=epoch + 1, loss=f"{m.last_loss():.3f}", acc=f"{m.running_acc():.2f}%")
                self.bar.update(step - self.bar.n)
        if not self.tty and step in self.log_at:
            self.log(f"epoch {epoch + 1}/{self.epochs} step {step}/{self.total} loss {m.last_loss():.4f} "
                     f"running acc {m.running_acc():.2f}%")

    def close(self):
        self.bar.close()


def train(model, images, labels, config, epochs, log=print, cuda_graphs=False):
    """Train in place with `config` (a recipe); returns per-step history {loss, acc, lr} and the final
    epoch's running accuracy on the given images (printed digits the recipe adds are trained on, not
    counted). cuda_graphs: see training_step."""
    given = len(images)
    if config.printed:
        images, labels = data.with_printed(images, labels, config.printed)
    n, dev = len(images), images.device
    slices = batch_slices(n, config.batch_size)
    total = epochs * len(slices)
    opt = build_optimizer(model.parameters(), config, total)
    metrics = Metrics(total, len(slices), dev)
    progress = Progress(metrics, epochs, log)
    step = training_step(model, opt, config, cuda_graphs)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, device=dev)
        counted = order < given  # the given images; the added printed digits come after them
        xs, ys = data.augmented_epoch(images, labels, order, config.augment, config.augment_strengths)
        for s, e in slices:
            out, loss = step(xs[s:e], ys[s:e])
            metrics.record(loss, out, ys[s:e], counted[s:e])
            progress.update(epoch)
    progress.close()
    return metrics.history(opt.learning_rates()), metrics.running_acc()


# ---------------------------------------------------------------- evaluation and outputs

def evaluate(model, images, labels):
    """(predicted classes, accuracy in %) on a labelled set."""
    preds = predicted_classes(model, images)
    return preds, 100 * (preds == labels).float().mean().item()


def print_summary(model):
    from torchsummary import summary

    # On a CPU copy: torchsummary runs a forward pass, which would move the real model's BN statistics;
    # and with the RNG forked, as its random input would otherwise shift every later random draw.
    with torch.random.fork_rng(devices=[]):
        summary(copy.deepcopy(model).cpu(), (1, 28, 28), device="cpu")


def sample_batch(images, labels, config, n=32):
    """The first n training images augmented as in training, from an RNG of their own (seed SEED), so
    that making them never changes the training run."""
    with torch.random.fork_rng(devices=[images.device] if images.device.type == "cuda" else []):
        torch.manual_seed(SEED)
        idx = torch.arange(n, device=images.device)
        return data.augmented_images(images, idx, config.augment, config.augment_strengths), labels[idx]


def output_bytes(n_params, plots_too):
    """About what a run writes: the float32 weights with torch.save's framing and the sidecar, plus
    the PNGs (about 0.2 MB measured; 1 MB allowed)."""
    return 4 * n_params + 64_000 + (1_000_000 if plots_too else 0)


def run_line(args, config, n_params):
    return (f"model {args.model}: {n_params:,} params | device {args.device} | epochs {args.epochs} | "
            f"batch {config.batch_size} | lr {config.lr} | augment {','.join(config.augment) or 'none'} | "
            f"seed {args.seed}" + (f" | recipe {args.recipe}" if args.recipe else "") +
            (f" | init {args.init}" if args.init else ""))


def held_out(images, labels, n):
    """(the training images, the validation set: the last n of them, or None when n is 0)."""
    if not n:
        return (images, labels), None
    return (images[:-n], labels[:-n]), (images[-n:], labels[-n:])


def sidecar(args, config, n_params, train_acc, test_acc, train_s, val_acc=None):
    """What the checkpoint's sidecar records: what rebuilds the model and reproduces the run."""
    return {"model": args.model, "params": n_params, "train_acc": round(train_acc, 4), "test_acc": round(test_acc, 4),
            "holdout": args.holdout, "val_acc": None if val_acc is None else round(val_acc, 4),
            "epochs": args.epochs, "seed": args.seed, "recipe": args.recipe, **config.to_sidecar(), "init": args.init,
            "device": args.device, "cuda_graphs": args.cuda_graphs, "compile": args.compile, **provenance(),
            "timestamp": timestamp(), "train_s": round(train_s, 3),
            "wall_s": round(time.perf_counter() - PROCESS_START, 3)}


def save_plots(train_x, train_y, test_x, test_y, preds, history, config, out_dir):
    plots.save_augmented_samples(*sample_batch(train_x, train_y, config), out_dir)
    plots.save_training_curves(history, os.path.join(out_dir, "training_curves.png"))
    plots.save_misclassified(test_x, test_y, preds, os.path.join(out_dir, "misclassified_grid.png"))
    print(f"saved augmented_samples/, training_curves.png, misclassified_grid.png in {out_dir}")


def main(argv=None):
    args = parse_args(argv)
    # Every check that can fail runs before training, and nothing is written until training has finished.
    torch.manual_seed(args.seed)  # before the model is built, so the seed sets the initial weights too
    model = load_checkpoint(args.init, args.model)[0] if args.init else build_model(args.model)
    args.model = model_name(model)
    config = recipe(args.model, args.recipe, batch_size=args.batch_size, lr=args.lr, augment=args.augment)
    config = replace(config, printed=None) if args.no_printed else config
    (train_x, train_y), val = held_out(*data.load_mnist(args.data_dir, "train", args.device), args.holdout)
    test_x, test_y = data.load_mnist(args.data_dir, "test", args.device)
    check_batch_size(config.batch_size, len(train_x), model)
    cli.check_out_dir(args.out_dir, need_bytes=output_bytes(count_params(model), not args.no_plots))

    model = model.to(args.device, memory_format=torch.channels_last)
    n_params = count_params(model)
    print_summary(model)
    print(run_line(args, config, n_params))
    t_train = time.perf_counter()
    history, train_acc = train(trainable(model, args.compile, args.device), train_x, train_y, config, args.epochs,
                               cuda_graphs=args.cuda_graphs)
    train_s = time.perf_counter() - t_train
    preds, test_acc = evaluate(model, test_x, test_y)
    val_acc = evaluate(model, *val)[1] if val else None
    print(f"train accuracy (running, last epoch): {train_acc:.2f}% | " +
          (f"validation accuracy: {val_acc:.2f}% | " if val else "") + f"test accuracy: {test_acc:.2f}% "
          f"({int((preds != test_y).sum())} of {len(test_y)} wrong) | training {train_s:.1f}s")
    metadata = sidecar(args, config, n_params, train_acc, test_acc, train_s, val_acc)
    path = save_checkpoint(model, args.out_dir, metadata)
    print(f"saved {path} (+ .json sidecar) | wall {metadata['wall_s']:.1f}s from process start")
    # The PNGs come after the checkpoint: they take a second (matplotlib), and the model should not wait.
    if not args.no_plots:
        save_plots(train_x, train_y, test_x, test_y, preds, history, config, args.out_dir)
    if test_acc < DIVERGED_BELOW:  # last, so that the line a user reads says it, and the exit code is 1
        raise cli.RunFailed(f"training diverged: test accuracy {test_acc:.2f}% is chance level; lower --lr (the "
                            f"recipe's is {recipe(args.model, args.recipe).lr}) or --batch-size, or check the data")
    return path


if __name__ == "__main__":
    cli.run_cli(main)

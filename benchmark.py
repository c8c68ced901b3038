"""Train every variant and the reference pipeline in one run, and print how they compare.

    python benchmark.py                       # all variants, 5 seeds each, plus the reference
    python benchmark.py --quick               # 1 seed, the fast subset (what CI runs)
    python benchmark.py --json bench.json --plot benchmark.png
    python benchmark.py --markdown bench_cpu.json   # the README's results table from a --json file

Per variant: params, multiply-adds per image, training-loop seconds for one epoch, training
accuracy and test accuracy (mean and min over seeds), each with train.py's recipe for it. Then the end-to-end
comparison: `python train.py` against the reference repos' pipeline (per-sample PIL transforms
through a DataLoader, the 12,412-param all-conv model, Adam lr 0.01), each timed as a whole process,
from start to checkpoint. On CUDA the training loop is timed with CUDA events after a warm-up.
"""
import time

PROCESS_START = time.perf_counter()  # as in train.py: the reference run's wall time counts from here

import cli

if __name__ == "__main__":
    cli.exit_quietly_on_signals()

import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import plots
import recipes
import train
from checkpoint import load_checkpoint
from model import MODELS, build_model, count_params

HERE = os.path.dirname(os.path.abspath(__file__))
QUICK_MODELS = ("fastnet",)
MAX_SEEDS = 100
REFERENCE_BATCH_SIZE = 128  # the reference repos' DataLoader batch


def build_parser():
    p = cli.parser(__doc__)
    p.add_argument("--seeds", type=int, default=5, help="seeds per variant (1, 2, ... N)")
    p.add_argument("--quick", action="store_true",
                   help=f"1 seed and only {', '.join(QUICK_MODELS)}: a smoke run for CI")
    p.add_argument("--models", help="comma-separated variants to run, each NAME or NAME:RECIPE for one of train.py's "
                   f"named recipes ({', '.join(train.RECIPES)}) (default: every variant with its own recipe, or the "
                   "quick subset)")
    cli.add_device(p)
    cli.add_data_dir(p)
    p.add_argument("--batch-size", type=int,
                   help=f"one batch size for every variant (default: train.py's, {train.recipe_help('batch_size')})")
    p.add_argument("--lr", type=float,
                   help=f"one peak lr for every variant (default: train.py's, {train.recipe_help('lr')})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change one field of every variant's recipe, e.g. optimizer.beta2=0.999 or "
                        "augment_strengths.noise_prob=0.03 (repeatable): how a tried change is rerun")
    p.add_argument("--holdout", type=int, default=0, metavar="N",
                   help="hold out the last N training images and report accuracy on them too: choices are made "
                        "on these, as train.py --holdout")
    p.add_argument("--compile", action="store_true", help="train through torch.compile, as train.py --compile")
    p.add_argument("--cuda-graphs", action="store_true", help="CUDA graphs for full batches, as train.py --cuda-graphs")
    p.add_argument("--no-end-to-end", action="store_true",
                   help="skip the end-to-end race of train.py against the reference pipeline")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--plot", metavar="PNG", help="also plot test accuracy against params and against seconds")
    p.add_argument("--reference-run", metavar="OUT_DIR",
                   help="run the reference pipeline once into OUT_DIR and exit (used to time it as a process)")
    p.add_argument("--markdown", metavar="JSON",
                   help="instead of training: print the README's results table from a --json file (its rows for "
                        "--models, default this project's variants and named recipes) and exit")
    p.add_argument("--preprocess", metavar="CHECKPOINT",
                   help="instead of training: time predict.py's preprocessing of a 4000x3000 photo (JPEG and "
                        "PNG) and one image end to end with CHECKPOINT, then exit")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    if args.markdown:
        return args
    cli.check_range("--seeds", args.seeds, 1, MAX_SEEDS)
    train.check_training_flags(args.batch_size, args.lr)
    names = list(QUICK_MODELS if args.quick else MODELS) if args.models is None else \
        [n.strip() for n in args.models.split(",") if n.strip()]
    if not names:
        raise cli.UserError(f"--models needs at least one name from {', '.join(MODELS)}")
    unknown = [n for n in names if n.partition(":")[0] not in MODELS]
    if unknown:
        raise cli.UserError(f"unknown model {unknown[0]!r}: use --models with names from {', '.join(MODELS)}")
    unknown = [n for n in names if n.partition(":")[2] not in ("", *train.RECIPES)]
    if unknown:
        raise cli.UserError(f"unknown recipe in {unknown[0]!r}: use NAME:RECIPE with one of {', '.join(train.RECIPES)}")
    cli.check_range("--holdout", args.holdout, 0, 50_000)
    for change in args.set:
        recipe_change(train.RECIPE, change)  # a bad KEY=VALUE is found before any training
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path:  # checked now: a result that cannot be written is found out before the training, not after
            cli.check_out_file(path, flag)
    args.models, args.seeds = names, 1 if args.quick else args.seeds
    args.device = cli.resolve_device(args.device)
    train.require_cuda_for_graphs(args.cuda_graphs, args.device)
    return args


def macs_per_image(model):
    """Multiply-adds of one forward pass, counted over Conv2d and Linear layers."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 1, 28, 28))
    for h in hooks:
        h.remove()
    return total


class Timer:
    """Wall seconds of a block; on CUDA, measured with events around it."""

    def __init__(self, device):
        self.cuda = device == "cuda"

    def __enter__(self):
        if self.cuda:
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.end.record()
            torch.cuda.synchronize()
            self.seconds = self.start.elapsed_time(self.end) / 1000
        else:
            self.seconds = time.perf_counter() - self.t0


def recipe_change(config, change):
    """`config` with one --set KEY=VALUE applied, or a one-line error."""
    key, _, text = change.partition("=")
    try:
        config = recipes.changed(config, key.strip(), text.strip())
    except ValueError as e:
        raise cli.UserError(f"--set {change!r}: {e}: use KEY=VALUE with a field of train.RECIPE") from None
    unknown = set(config.augment) - set(data.AUGMENTATIONS)
    if unknown:
        raise cli.UserError(f"--set {change!r}: unknown augmentation {sorted(unknown)[0]!r}")
    return config


def variant_recipe(entry, args):
    """(model name, its recipe) for a --models entry NAME or NAME:RECIPE, with --batch-size, --lr and every
    --set applied."""
    name, _, recipe_name = entry.partition(":")
    config = train.recipe(name, recipe_name or None, batch_size=args.batch_size, lr=args.lr)
    for change in args.set:
        config = recipe_change(config, change)
    return name, config


def one_epoch(config, model, images, labels, args, cuda_graphs=False):
    """One quiet epoch of a recipe (variant_recipe's); returns the running training accuracy."""
    return train.train(train.trainable(model, args.compile, args.device), images, labels, config, 1,
                       log=lambda *a: None, cuda_graphs=cuda_graphs)[1]


def train_variant(name, config, seed, mnist, args):
    """One epoch of variant `name` with `config`: (epoch seconds, running train accuracy, test accuracy,
    accuracy on the held-out images or None)."""
    (train_x, train_y), val, (test_x, test_y) = mnist
    torch.manual_seed(seed)
    model = build_model(name).to(args.device, memory_format=torch.channels_last)
    with Timer(args.device) as t:
        train_acc = one_epoch(config, model, train_x, train_y, args, args.cuda_graphs)
    test_acc = train.evaluate(model, test_x, test_y)[1]
    return t.seconds, train_acc, test_acc, train.evaluate(model, *val)[1] if val else None


def epoch_images(n_train, config):
    """Images in one epoch of `config`: the training set, plus the printed digits its augmentation adds."""
    return n_train + data.printed_count(config.printed)


def warm_up(configs, mnist, args):
    """Each recipe's printed digits rendered (data preparation, not timed, as loading MNIST is not); on
    CUDA or with --compile, a short run of each variant too, so that CUDA context, kernel loading,
    allocator set-up and compilation are not timed."""
    for _, config in configs.values():
        if config.printed:
            data.printed_set(config.printed)
    if args.device == "cuda" or args.compile:  # CUDA-graph capture happens, and is timed, in each run
        train_x, train_y = mnist[0]
        for name, config in configs.values():
            model = build_model(name).to(args.device, memory_format=torch.channels_last)
            one_epoch(config, model, train_x[:4096], train_y[:4096], args)


# ---------------------------------------------------------------- the reference pipeline

def reference_pipeline(data_dir, out_dir, seed=1):
    """The reference repos' way, as they describe it: torchvision per-sample PIL transforms through a
    DataLoader (batch 128, shuffle), the 12,412-param all-conv model, Adam lr 0.01, one epoch on the CPU."""
    from torchvision import datasets, transforms

    torch.manual_seed(seed)
    normalize = transforms.Normalize((data.MNIST_MEAN,), (data.MNIST_STD,))
    train_tf = transforms.Compose([transforms.RandomRotation((5, 7)), transforms.ToTensor(), normalize])
    test_tf = transforms.Compose([transforms.ToTensor(), normalize])
    train_loader = torch.utils.data.DataLoader(datasets.MNIST(data_dir, train=True, download=True, transform=train_tf),
                                               batch_size=REFERENCE_BATCH_SIZE, shuffle=True)
    test_loader = torch.utils.data.DataLoader(datasets.MNIST(data_dir, train=False, transform=test_tf),
                                              batch_size=1000)
    model = build_model("ref_allconv_12k")
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    t0 = time.perf_counter()
    model.train()
    for x, y in train_loader:
        opt.zero_grad()
        F.nll_loss(model(x), y).backward()
        opt.step()
    epoch_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in test_loader)
    test_acc = 100 * correct / len(test_loader.dataset)
    torch.save(model.state_dict(), os.path.join(out_dir, "reference.pth"))
    with open(os.path.join(out_dir, "reference.json"), "w", encoding="utf-8") as f:
        json.dump({"epoch_s": epoch_s, "test_acc": test_acc, "wall_s": time.perf_counter() - PROCESS_START}, f)


def timed_process(args):
    """Run `python ARGS` as a fresh process; its wall seconds from start to exit."""
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, *args], cwd=HERE, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise cli.UserError(f"{args[0]} failed: {last}")
    return wall


def end_to_end(data_dir, device, repeats=2):
    """`python train.py` against the reference pipeline, each a fresh process, run alternately.

    Per side, medians over the repeats of: seconds from the top of the script to the checkpoint on
    disk (what each process reports; Python's own start-up, the same for both, is left out) and
    seconds from launching the process to its exit (train.py still writes its PNGs after the checkpoint)."""
    runs = {"ref": [], "ours": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            ref_dir, our_dir = os.path.join(tmp, f"ref{i}"), os.path.join(tmp, f"ours{i}")
            os.makedirs(ref_dir)
            exit_s = timed_process(["benchmark.py", "--reference-run", ref_dir, "--data-dir", data_dir])
            with open(os.path.join(ref_dir, "reference.json"), encoding="utf-8") as f:
                runs["ref"].append(dict(json.load(f), exit_s=exit_s))
            exit_s = timed_process(["train.py", "--out-dir", our_dir, "--data-dir", data_dir, "--device", device])
            (sidecar,) = [f for f in os.listdir(our_dir) if f.endswith(".json")]
            with open(os.path.join(our_dir, sidecar), encoding="utf-8") as f:
                runs["ours"].append(dict(json.load(f), exit_s=exit_s))

    def summary(side, keys):
        return {k: round(statistics.median(r[k] for r in runs[side]), 3) for k in keys}

    return (summary("ref", ("epoch_s", "wall_s", "exit_s", "test_acc")),
            summary("ours", ("wall_s", "exit_s", "test_acc")))


# ---------------------------------------------------------------- report

def cpu_name():
    """The CPU's model name where Linux tells it (platform.processor() says only x86_64 there)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def markdown(result, names=None):
    """The README's results table from a --json result: the rows named (default: every row but the
    reference architectures), the reference pipeline when it ran, and the end-to-end speed-up."""
    picked = [r for r in result["variants"] if (r["name"] in names if names else not r["name"].startswith("ref_"))]
    rows = [[r["name"].replace(":", ", `--recipe ") + ("`" if ":" in r["name"] else ""), f"{r['params']:,}",
             str(r["batch_size"]), f"{r['steps_per_epoch']:,}", f"{r['epoch_s']:.2f}", f"{r['train_acc_mean']:.2f}",
             f"{r['test_acc_mean']:.2f}", f"{r['test_acc_min']:.2f}"] for r in picked]
    ref, ours = result.get("reference"), result.get("train_py")
    if ref and not names:
        rows.append(["reference pipeline (ref_allconv_12k, PIL + DataLoader, Adam)", "12,412",
                     str(REFERENCE_BATCH_SIZE), "", f"{ref['epoch_s']:.2f}", "", f"{ref['test_acc']:.2f}", ""])
    text = cli.markdown_table(["model", "params", "batch", "steps / epoch", "epoch s (median)", "train acc % (mean)",
                               "test acc % (mean)", "test acc % (min)"], rows, align="lrrrrrrr")
    if ref and ours and not names:
        text += (f"\nEnd to end, `python train.py` reached its checkpoint in {ours['wall_s']:.2f} s "
                 f"({ours['test_acc']:.2f}% test), the reference pipeline in {ref['wall_s']:.2f} s: "
                 f"**{ref['wall_s'] / ours['wall_s']:.2f}x faster** ({ref['exit_s'] / ours['exit_s']:.2f}x to "
                 f"process exit).\n")
    return text + (f"\n{result['seeds']} seeds per row, {result['date']}, torch {result['torch']}, "
                   f"{result['device']} ({result['device_name']}, {result['cpu_threads']} threads).\n")


def print_table(rows, reference, ours, seeds):
    print(f"\none augmented epoch, {seeds} seed(s) each; accuracies in %")
    print(f"{'model':18s} {'params':>7s} {'MACs':>9s} {'batch':>5s} {'steps':>5s} {'img/s':>7s} {'epoch s':>8s} "
          f"{'train':>7s} {'test':>7s} {'test min':>8s}")
    for r in rows:
        print(f"{r['name']:18s} {r['params']:7,d} {r['macs']:9,d} {r['batch_size']:5d} {r['steps_per_epoch']:5d} "
              f"{r['images_per_s']:7,d} {r['epoch_s']:8.2f} {r['train_acc_mean']:7.2f} {r['test_acc_mean']:7.2f} "
              f"{r['test_acc_min']:8.2f}")
    if reference is None:
        return
    print(f"{'reference pipeline':18s} {12412:7,d} {'':9s} {REFERENCE_BATCH_SIZE:5d} {'':5s} {'':7s} "
          f"{reference['epoch_s']:8.2f} {'':7s} {reference['test_acc']:7.2f}")
    print(f"\nend to end (median of runs): python train.py {ours['wall_s']:.2f}s to checkpoint, "
          f"{ours['exit_s']:.2f}s to exit (test {ours['test_acc']:.2f}%); reference pipeline "
          f"{reference['wall_s']:.2f}s to checkpoint, {reference['exit_s']:.2f}s to exit "
          f"(test {reference['test_acc']:.2f}%)")
    print(f"speed-up of train.py over the reference: {reference['wall_s'] / ours['wall_s']:.2f}x to checkpoint, "
          f"{reference['exit_s'] / ours['exit_s']:.2f}x to exit")


def time_preprocessing(checkpoint, data_dir, repeats=5):
    """Seconds that preprocess.prepare takes on a 4000x3000 photo of a test digit, as JPEG and as PNG
    (median of `repeats`), and `python predict.py CHECKPOINT photo.jpg` from launch to exit (median of 3)."""
    from PIL import Image, ImageFilter

    import preprocess

    digit = data.load_mnist(data_dir, "test", "cpu")[0][0, 0]
    ink = Image.fromarray((255 - digit).numpy()).resize((700, 700), Image.BICUBIC)
    paper = Image.linear_gradient("L").resize((4000, 3000)).point(lambda v: 140 + v // 3)  # light falling off
    paper.paste(ink, (1600, 1100), Image.fromarray(digit.numpy()).resize((700, 700), Image.BICUBIC))
    noise = Image.effect_noise(paper.size, 12)  # sensor noise: it also gives the files a camera's size
    photo = Image.blend(paper.filter(ImageFilter.GaussianBlur(2)), noise, 0.3).convert("RGB")
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("JPEG", "PNG"):
            path = os.path.join(tmp, f"photo.{fmt.lower()}")
            photo.save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
            with open(path, "rb") as f:
                encoded = f.read()
            runs = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                preprocess.prepare(encoded, path)
                runs.append(time.perf_counter() - t0)
            times[fmt] = statistics.median(runs)
            print(f"preprocessing a 4000x3000 {fmt} ({len(encoded) / 1e6:.1f} MB): {times[fmt]:.3f} s "
                  f"(median of {repeats})")
        jpeg = os.path.join(tmp, "photo.jpeg")
        end_to_end = statistics.median(timed_process(["predict.py", checkpoint, jpeg]) for _ in range(3))
        print(f"python predict.py CHECKPOINT photo.jpeg, launch to exit: {end_to_end:.2f} s (median of 3)")
    times["number JPEG"] = time_number(checkpoint, data_dir, repeats)
    return times, end_to_end


def time_number(checkpoint, data_dir, repeats):
    """Seconds from a 4000x3000 JPEG photo of a six-digit number (MNIST test digits 520 px tall, apart) to its
    six 28x28 digits, as predict.py --number reads it: preprocessing and segmentation (median of `repeats`)."""
    from PIL import Image, ImageFilter

    import preprocess
    import segmentation
    from inference import probabilities

    images, labels = data.load_mnist(data_dir, "test", "cpu")
    paper = Image.linear_gradient("L").rotate(90).resize((4000, 3000)).point(lambda v: 150 + v // 3)
    for k in range(6):
        digit = Image.fromarray(images[k, 0].numpy()).resize((520, 520), Image.BICUBIC)
        paper.paste(Image.new("L", digit.size, 30), (360 + 560 * k, 1200 + 20 * k), digit)  # a sloping line
    noise = Image.effect_noise(paper.size, 12)
    photo = Image.blend(paper.filter(ImageFilter.GaussianBlur(2)), noise, 0.3).convert("RGB")
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=95)
    encoded = buf.getvalue()
    model, _ = load_checkpoint(checkpoint)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        digits = segmentation.read_number(preprocess.found_digit(preprocess.read_image(encoded)),
                                          lambda x: probabilities(model, x))
        runs.append(time.perf_counter() - t0)
    read = segmentation.number_read(segmentation.probabilities_of(digits))
    print(f"reading a 4000x3000 JPEG of a six-digit number ({len(encoded) / 1e6:.1f} MB) into its digits: "
          f"{statistics.median(runs):.3f} s (median of {repeats}); read {read}, written "
          + "".join(str(int(v)) for v in labels[:6]))
    return statistics.median(runs)


def main(argv=None):
    args = parse_args(argv)
    if args.markdown:
        names = args.models and [n.strip() for n in args.models.split(",") if n.strip()]
        print(markdown(cli.read_json(args.markdown, "--markdown"), names), end="")
        return
    if args.reference_run:
        reference_pipeline(args.data_dir, args.reference_run)
        return
    if args.preprocess:
        return time_preprocessing(args.preprocess, args.data_dir)
    mnist = (*train.held_out(*data.load_mnist(args.data_dir, "train", args.device), args.holdout),
             data.load_mnist(args.data_dir, "test", args.device))
    configs = {entry: variant_recipe(entry, args) for entry in args.models}
    for name, config in configs.values():
        train.check_batch_size(config.batch_size, len(mnist[0][0]), build_model(name))
    warm_up(configs, mnist, args)
    rows = []
    for entry, (name, config) in configs.items():
        runs = [train_variant(name, config, seed, mnist, args) for seed in range(1, args.seeds + 1)]
        epoch_s, train_acc, test_acc, val_acc = zip(*runs, strict=True)
        model = build_model(name)
        images = epoch_images(len(mnist[0][0]), config)
        rows.append({"name": entry, "params": count_params(model), "macs": macs_per_image(model),
                     "batch_size": config.batch_size, "lr": config.lr,
                     "steps_per_epoch": len(train.batch_slices(images, config.batch_size)),
                     "images_per_s": round(images / statistics.median(epoch_s)),
                     "epoch_s": round(statistics.median(epoch_s), 3),
                     "train_acc_mean": round(statistics.mean(train_acc), 3),
                     "test_acc_mean": round(statistics.mean(test_acc), 3), "test_acc_min": round(min(test_acc), 2)})
        if args.holdout:
            rows[-1]["val_acc_mean"] = round(statistics.mean(val_acc), 3)
        print(f"{entry}: " + ", ".join(f"seed {i + 1} test {t:.2f}%" + (f" val {v:.2f}%" if v is not None else "")
                                       for i, (t, v) in enumerate(zip(test_acc, val_acc, strict=True))), flush=True)
    result = {"variants": rows, "seeds": args.seeds, "holdout": args.holdout, "set": args.set,
              "compile": args.compile, "cuda_graphs": args.cuda_graphs, "device": args.device,
              "device_name": torch.cuda.get_device_name() if args.device == "cuda" else cpu_name(),
              "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "command": cli.command_line("benchmark.py", argv)}
    if args.no_end_to_end:
        print_table(rows, None, None, args.seeds)
    else:
        reference, ours = end_to_end(args.data_dir, args.device, repeats=1 if args.quick else 3)
        print_table(rows, reference, ours, args.seeds)
        result.update(reference=reference, train_py=ours,
                      speedup_vs_reference=round(reference["wall_s"] / ours["wall_s"], 3),
                      speedup_vs_reference_to_exit=round(reference["exit_s"] / ours["exit_s"], 3))
    if args.json:
        cli.atomic_write(args.json, (json.dumps(result, indent=2) + "\n").encode())
    if args.plot:
        plots.save_benchmark_plot(rows, args.plot)
    return result


if __name__ == "__main__":
    cli.run_cli(main)

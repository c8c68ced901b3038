"""Stage a GitHub Release: trained checkpoints under stable names, and a model card as its notes.

    python release.py --out release --repo OWNER/REPO CHECKPOINT [CHECKPOINT ...]

Each checkpoint (one per variant) needs its sidecar and its ONNX export (export.py) beside it. Into --out go,
per variant, <variant>.pth, .json and .onnx (the names hubconf.py's pretrained=True fetches from the latest
release, so that URL never changes) and the same three files under the checkpoint's own tagged name; then
notes.md, a model card built from the sidecars. --repo must be hubconf.py's GITHUB_REPO, so that torch.hub
finds what is published. Nothing is written unless every checkpoint checks out.
"""
import os
import shutil

import cli
import hubconf
from checkpoint import load_checkpoint, sidecar_path
from model import MODELS


def build_parser():
    p = cli.parser(__doc__)
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="model_mnist_*.pth, one per variant")
    p.add_argument("--out", required=True, help="a new folder for the release's files")
    p.add_argument("--repo", required=True, help="the repository the release is for (owner/name)")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    if args.repo != hubconf.GITHUB_REPO:
        raise cli.UserError(f"hubconf.py's GITHUB_REPO is {hubconf.GITHUB_REPO!r}, not {args.repo!r}: set it to "
                            f"{args.repo!r} there, so that torch.hub's pretrained=True finds this release")
    if os.path.exists(args.out):
        raise cli.UserError(f"--out {args.out!r} exists: pass a new folder")
    return args


def assets(pth, sidecar):
    """(source, name in the release) for one checkpoint's files: each under the stable and the tagged name."""
    stem = os.path.splitext(pth)[0]
    stable = hubconf.RELEASE_STEM.format(model=sidecar["model"])
    sources = {".pth": pth, ".json": sidecar_path(pth), ".onnx": stem + ".onnx"}
    if not os.path.isfile(sources[".onnx"]):
        raise cli.UserError(f"no ONNX export beside {pth}: run python export.py {pth}")
    return [(src, name + ext) for ext, src in sources.items()
            for name in (stable, os.path.basename(stem))]


def model_card(sidecars, tag):
    """The release notes: what each checkpoint is, how it scored, and what trained it."""
    first = sidecars[0]
    lines = [f"## MNIST models, {tag}", "",
             "One augmented epoch each, trained by this release's workflow run "
             f"(torch {first['torch']}, commit {first.get('git_commit') or 'unknown'}).", "",
             "| model | params | test acc | train acc | batch | lr | augmentation | seed |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for s in sidecars:
        lines.append(f"| {s['model']} | {s['params']:,} | {s['test_acc']:.2f}% | {s['train_acc']:.2f}% | "
                     f"{s['batch_size']} | {s['lr']} | {', '.join(s['augment']) or 'none'} | {s['seed']} |")
    lines += ["", "In Python, with the latest release's weights:", "",
              "```python", "import torch",
              f"model = torch.hub.load(\"{hubconf.GITHUB_REPO}\", \"{first['model']}\", pretrained=True)",
              "```", "", "Each `<model>.json` is that checkpoint's full sidecar: its whole recipe and sha256."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    loaded = [load_checkpoint(pth)[1] for pth in args.checkpoints]  # each verified against its sidecar's sha256
    variants = [s.get("model") for s in loaded]
    if None in variants or len(set(variants)) < len(variants):
        raise cli.UserError("pass one checkpoint per variant, each with its sidecar (it names the variant)")
    files = [a for pth, s in zip(args.checkpoints, loaded, strict=True) for a in assets(pth, s)]
    order = {name: i for i, name in enumerate(MODELS)}
    sidecars = sorted(loaded, key=lambda s: order[s["model"]])
    tag = os.environ.get("GITHUB_REF_NAME", "local build")
    tmp = args.out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        for src, name in files:
            shutil.copyfile(src, os.path.join(tmp, name))
        with open(os.path.join(tmp, "notes.md"), "w", encoding="utf-8") as f:
            f.write(model_card(sidecars, tag))
        os.rename(tmp, args.out)  # the folder appears whole, or not at all
    except OSError as e:
        raise cli.UserError(f"cannot write --out {args.out!r} ({e.strerror}): pass a writable place") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {len(files) + 1} files to {args.out}: {', '.join(sorted(os.listdir(args.out)))}")


if __name__ == "__main__":
    cli.run_cli(main)

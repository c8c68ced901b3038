"""What every script shares on the command line: the parser and its shared flags, one-line errors
and exit codes, output files written whole, and run_cli.

Exit codes: 0 done; 1 training stopped on a NaN or infinite loss; 2 bad input (a flag, a file,
missing data); 130 interrupted; 141 the reader of stdout went away. Nothing here imports torch
at module level.
"""
import argparse
import os
import sys
import tempfile

EXIT_FAILED, EXIT_USAGE, EXIT_PIPE, EXIT_INTERRUPTED = 1, 2, 141, 130


class UserError(Exception):
    """Bad input: run_cli prints the message as one line and exits 2."""


class RunFailed(Exception):
    """The run itself failed: one line and exit 1."""


# ---------------------------------------------------------------- the parser and shared flags

class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones: those flags explain their default in their own help."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is a UserError (one line) rather than usage text."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


def parser(doc):
    """A parser whose description is the first paragraph of the script's docstring."""
    return OneLineParser(description=doc.split("\n\n")[0], formatter_class=HelpFormatter)


def default_data_dir():
    return os.environ.get("MNIST_DATA_DIR", "./data")


def add_data_dir(p, purpose="MNIST root in torchvision's layout; downloaded there when absent"):
    p.add_argument("--data-dir", default=default_data_dir(), help=f"{purpose} (env MNIST_DATA_DIR)")


def add_device(p):
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto takes CUDA, then MPS, when present, else the CPU")


def add_out_dir(p, what):
    p.add_argument("--out-dir", default=".", help=f"where {what}")


def resolve_device(name):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[name]:
        raise UserError(f"--device {name} is not available on this machine: use --device cpu or auto")
    return name


# ---------------------------------------------------------------- output files

def check_out_dir(out_dir):
    """Create out_dir if needed and prove it is writable, before any work is spent."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise UserError(f"cannot write to --out-dir {out_dir!r} ({e.strerror}): choose a writable folder") from None


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


# ---------------------------------------------------------------- running a script

def run_cli(entry, argv=None):
    """Turn the errors a user can cause into one line on stderr and an exit code, never a traceback."""
    try:
        entry(argv)
        sys.stdout.flush()  # inside the try, so that a closed pipe is caught here rather than at exit
    except BrokenPipeError:
        # Whoever read the output has gone (`| head`): stop quietly, as Unix tools do, with the
        # leftover output sent nowhere so that Python's flush at exit does not print a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_PIPE)
    except UserError as e:
        fail(f"error: {e}", EXIT_USAGE)
    except RunFailed as e:
        fail(f"error: {e}", EXIT_FAILED)
    except KeyboardInterrupt:
        fail("interrupted: no checkpoint was written", EXIT_INTERRUPTED)


def fail(message, code):
    print(message, file=sys.stderr)
    sys.exit(code)

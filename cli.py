"""What every script shares on the command line: the parser and its shared flags, one-line errors
and exit codes, signals, and output files that are either written whole or not at all.

Exit codes: 0 done; 1 the run failed (training diverged, a write failed); 2 bad input (a flag, a
file, missing data); 130 / 143 interrupted by SIGINT / SIGTERM; 141 the reader of stdout went away.
Every non-zero exit prints one line on stderr that says what happened, what was saved, and what to
do. Nothing here imports torch at module level: a script sets up its signals before that import.
"""
import argparse
import errno
import json
import os
import shutil
import signal
import sys
import tempfile

EXIT_FAILED, EXIT_USAGE, EXIT_PIPE = 1, 2, 141
SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}
_saved = []  # the files this run has written whole, so that an error or a signal can say what exists


# Every character str.splitlines() breaks at, shown escaped when a message quotes it.
LINE_BREAKS = str.maketrans({c: c.encode("unicode_escape").decode() for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


class OneLineError(Exception):
    """An error told in one line, even where it quotes a file name or a flag's value with a line break in it."""

    def __init__(self, message):
        super().__init__(message.translate(LINE_BREAKS))


class UserError(OneLineError):
    """Bad input: one line and exit 2."""


class RunFailed(OneLineError):
    """The run itself failed (diverged, a write failed): one line and exit 1."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, so that no `except Exception` swallows it."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ---------------------------------------------------------------- the parser and shared flags

class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones (those flags explain their default in their own help) and the
    False of on/off switches."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, False) else super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is a UserError (one line) rather than usage text; options may stand
    before, between or after the positional arguments (`predict.py CK --top 3 a.png b.png`)."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")

    def parse_args(self, args=None, namespace=None):
        return self.parse_intermixed_args(args, namespace)


def parser(doc):
    """A parser whose description is the first paragraph of the script's docstring."""
    return OneLineParser(description=doc.split("\n\n")[0], formatter_class=HelpFormatter)


def default_data_dir():
    return os.environ.get("MNIST_DATA_DIR", "./data")


def add_data_dir(p, purpose="MNIST root in torchvision's layout; downloaded there when absent"):
    p.add_argument("--data-dir", default=default_data_dir(), metavar="DIR", help=f"{purpose} (env MNIST_DATA_DIR)")


def add_device(p):
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto takes CUDA, then MPS, when present, else the CPU")


def add_out_dir(p, what):
    p.add_argument("--out-dir", default=".", metavar="DIR", help=f"where {what}")


def check_range(flag, value, low, high):
    """A UserError unless low <= value <= high; nan fails too. None (not given) passes."""
    if value is not None and not low <= value <= high:
        raise UserError(f"{flag} must be between {low:,} and {high:,}, got {value}")


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


# ---------------------------------------------------------------- input files

def read_file(path, what):
    """The bytes of a file the user named, or one line that says why it cannot be read."""
    if os.path.isdir(path):
        raise UserError(f"{what} {path!r} is a folder: pass a file")
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        problem = "is a broken symbolic link" if os.path.islink(path) else "not found"
        raise UserError(f"{what} {path!r} {problem}: check the path") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"{what} {path!r} is a symbolic link that loops: pass a real file") from None
        raise UserError(f"cannot read {what} {path!r} ({e.strerror}): check the path and its permissions") from None


def read_json(path, what):
    """The JSON object in a file the user named, or one line that says why it is not one."""
    try:
        value = json.loads(read_file(path, what))
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise UserError(f"{what} {path!r} is not a JSON object: pass the file the script's --json wrote")
    return value


# ---------------------------------------------------------------- output files

def command_line(script, argv):
    """How a run was started, for the JSON it writes: `python SCRIPT` and its arguments (sys.argv's when
    main() was given none)."""
    return " ".join(["python", script, *(sys.argv[1:] if argv is None else map(str, argv))])


def markdown_table(header, rows, align):
    """A Markdown table; `align` has one letter per column, l or r."""
    rule = ["---:" if a == "r" else "---" for a in align]
    return "".join(f"| {' | '.join(cells)} |\n" for cells in [header, rule, *rows])


def check_out_dir(out_dir, flag="--out-dir", need_bytes=0):
    """Create out_dir if needed and prove it takes a file and has need_bytes free, before any work is spent.
    A folder made here is removed again when the check fails."""
    made = next((d for d in ancestors(out_dir) if not os.path.exists(d)), None)
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
        free = shutil.disk_usage(out_dir).free
        if free < need_bytes:
            raise UserError(f"{flag} {out_dir!r} has {free / 1e6:.2f} MB free, and this run writes about "
                            f"{need_bytes / 1e6:.2f} MB: free some space or choose another folder")
    except OSError as e:
        remove_made(made)
        raise UserError(f"cannot write to {flag} {out_dir!r} ({e.strerror}): choose a writable folder") from None
    except UserError:
        remove_made(made)
        raise


def ancestors(path):
    """path's folders from the top down, ending with path itself."""
    parts, path = [], os.path.abspath(path)
    while path != os.path.dirname(path):
        parts.append(path)
        path = os.path.dirname(path)
    return parts[::-1]


def remove_made(folder):
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def check_out_file(path, flag):
    """Prove that `path` can be written: its folder exists and takes a file, and it is no folder itself."""
    if os.path.isdir(path):
        raise UserError(f"{flag} {path!r} is a folder: give a file name")
    try:
        with tempfile.TemporaryFile(dir=os.path.dirname(path) or "."):
            pass
    except OSError as e:
        raise UserError(f"cannot write {flag} {path!r} ({e.strerror}): choose a writable place") from None


def atomic_write(path, data, replace=True):
    """Write bytes to a temp file beside `path`, then move it into place: a reader never sees half a
    file, and a failed or interrupted write leaves nothing behind. A failure is a RunFailed naming the
    file. With replace=False an existing `path` is never overwritten: nothing is written and the
    result is False (the move is a hard link, which fails where the name is taken).

    The temp file is created as open() creates any file, mode 0o666 less the user's umask (mkstemp
    would make it 0o600); O_EXCL and a random name keep it our own."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".tmp_{os.urandom(4).hex()}_{os.path.basename(path)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            if replace:
                os.replace(tmp, path)
            elif not publish_new(tmp, path):
                return False
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        raise RunFailed(f"could not write {path} ({e.strerror or e})") from None
    _saved.append(path)
    return True


def publish_new(tmp, path):
    """Give tmp's file the name `path` unless that name is taken; whether it did."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        if os.path.exists(path):  # a file system without hard links: check, then rename (not atomic, but rare)
            return False
        os.replace(tmp, path)
    return True


def make_dir(path):
    """A folder for outputs, made if missing; a failure is a RunFailed naming it."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise RunFailed(f"could not create {path} ({e.strerror})") from None


def unsave(path):
    """Take back a file this run wrote (a checkpoint whose sidecar could not follow it)."""
    os.unlink(path)
    _saved.remove(path)


def saved_files():
    """What this run has written whole so far, as the end of an error line: the first few by name."""
    if not _saved:
        return "nothing was saved"
    more = f" and {len(_saved) - 3} more files" if len(_saved) > 3 else ""
    return f"saved {', '.join(_saved[:3])}{more}"


# ---------------------------------------------------------------- running a script

def exit_quietly_on_signals():
    """A script calls this first, before its imports (torch takes a second or two). Outside run_cli,
    from then on a signal ends the process with one true line instead of a KeyboardInterrupt traceback."""
    def handler(signum, frame):
        os.write(2, f"interrupted ({signal.Signals(signum).name}): {saved_files()}\n".encode())
        os._exit(SIGNALS[signum])

    for signum in SIGNALS:
        signal.signal(signum, handler)


def raise_interrupted(signum, frame):
    raise Interrupted(signum)


def run_cli(entry, argv=None):
    """Run entry(argv), turning every failure a user can meet into one line on stderr and an exit code."""
    _saved.clear()
    previous = {s: signal.signal(s, raise_interrupted) for s in SIGNALS}  # unwinds, so temp files go
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
        fail(f"error: {e}; {saved_files()}", EXIT_FAILED)
    except Interrupted as e:
        fail(f"interrupted ({e}): {saved_files()}", SIGNALS[e.signum])
    except KeyboardInterrupt:  # a SIGINT delivered through another handler
        fail(f"interrupted (SIGINT): {saved_files()}", SIGNALS[signal.SIGINT])
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def fail(message, code):
    print(message, file=sys.stderr)
    sys.exit(code)

"""cli.py: one-line errors and exit codes, the shared flags, and files written whole."""
import importlib
import os
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cli


def entry_raising(exc):
    def entry(argv):
        raise exc
    return entry


@pytest.mark.parametrize("exc, code, line", [
    (cli.UserError("bad flag"), 2, "error: bad flag"),
    (cli.RunFailed("training stopped"), 1, "error: training stopped"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_run_cli_turns_errors_into_one_line(exc, code, line, in_process):
    result = in_process(entry_raising(exc), [])
    assert result.returncode == code
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(line)


def test_run_cli_lets_a_clean_run_exit_0(in_process):
    result = in_process(lambda argv: print("done", argv), ["a"])
    assert (result.returncode, result.stdout) == (0, "done ['a']\n")


def test_parser_errors_are_one_line():
    p = cli.parser("Doc line.\n\nMore.")
    p.add_argument("--n", type=int)
    with pytest.raises(cli.UserError, match=r"argument --n: invalid int value: 'x' \(see --help\)"):
        p.parse_args(["--n", "x"])
    assert p.description == "Doc line."


def test_help_shows_defaults_except_none():
    p = cli.parser("Doc.")
    p.add_argument("--a", default=3, help="a flag")
    p.add_argument("--b", help="b flag, default explained here")
    text = p.format_help()
    assert "a flag (default: 3)" in text and "(default: None)" not in text


def test_shared_flags(monkeypatch):
    monkeypatch.setenv("MNIST_DATA_DIR", "/somewhere/mnist")
    p = cli.parser("Doc.")
    cli.add_data_dir(p)
    cli.add_device(p)
    cli.add_out_dir(p, "things go")
    args = p.parse_args([])
    assert (args.data_dir, args.device, args.out_dir) == ("/somewhere/mnist", "auto", ".")


def test_resolve_device():
    assert cli.resolve_device("cpu") == "cpu"
    assert cli.resolve_device("auto") in ("cpu", "cuda", "mps")


def test_check_out_dir_creates_and_refuses(tmp_path):
    cli.check_out_dir(str(tmp_path / "new" / "deeper"))
    assert (tmp_path / "new" / "deeper").is_dir() and not os.listdir(tmp_path / "new" / "deeper")
    (tmp_path / "file").write_text("x")
    with pytest.raises(cli.UserError, match="cannot write to --out-dir"):
        cli.check_out_dir(str(tmp_path / "file" / "sub"))


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path, monkeypatch):
    def boom(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        cli.atomic_write(str(tmp_path / "f.bin"), b"data")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- fuzzing every script's flags

SCRIPTS = ("train", "predict", "export", "benchmark", "eval_sets", "serve")
# What argv can hold: no NUL bytes, and no lone surrogates beyond the ones Python's own decoding makes.
argv_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/\\"), max_size=12)
values = st.one_of(
    argv_text, st.integers(-2**70, 2**70).map(str), st.floats().map(str),
    st.sampled_from(["", "0", "-1", "1", "nan", "inf", "-inf", "1e999", "none", "auto", "cpu", "cuda", "mps",
                     "fastnet", "tinynet,lenet", ",,", "rotate,blur", "--", "-x"]))


@st.composite
def argvs(draw, parser):
    """A command line for `parser`: some of its options, each with a random value, and random positionals."""
    options = [a for a in parser._actions if a.option_strings and "-h" not in a.option_strings]
    argv = []
    for action in draw(st.lists(st.sampled_from(options), max_size=5)):
        argv.append(action.option_strings[-1])
        if action.nargs != 0:
            argv.append(draw(values))
    return argv + draw(st.lists(values, max_size=3))


@pytest.mark.parametrize("examples", [pytest.param(100, id="quick"),
                                      pytest.param(3000, id="long", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", SCRIPTS)
def test_fuzzed_flags_parse_or_fail_in_one_line(name, examples, tmp_path, monkeypatch):
    """Random values for every flag of every script: parsed and checked, or one UserError line."""
    module = importlib.import_module(name)
    monkeypatch.chdir(tmp_path)  # paths the flags name stay in a scratch folder

    @settings(max_examples=examples, deadline=None)
    @given(argvs(module.build_parser()))
    def check(argv):
        try:
            module.parse_args(argv)
        except cli.UserError as e:
            assert len(str(e).splitlines()) == 1

    check()


def test_a_quoted_line_break_stays_on_the_line():
    message = str(cli.UserError("image 'a\nb\u2028c.png' not found"))
    assert message.splitlines() == [message] and "a\\nb\\u2028c.png" in message


def test_command_line_records_how_a_run_was_started(monkeypatch):
    assert cli.command_line("eval_sets.py", ["--out", 3]) == "python eval_sets.py --out 3"
    monkeypatch.setattr(sys, "argv", ["benchmark.py", "--quick"])
    assert cli.command_line("benchmark.py", None) == "python benchmark.py --quick"

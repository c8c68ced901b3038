"""README.md and EXPERIMENTS.md: every table of results is what its command makes from the committed JSON,
and every flag the README gives a script is one the script has."""
import contextlib
import fnmatch
import glob
import importlib
import io
import os
import re
import shlex

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = ("README.md", "EXPERIMENTS.md")
BLOCK = re.compile(r"<!-- generated: (.+?) -->\n(.*?)<!-- end generated -->\n", re.S)


def text(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


def generated_blocks():
    return [(doc, command, block) for doc in DOCS for command, block in BLOCK.findall(text(doc))]


def output_of(command):
    """What `python SCRIPT.py ARGS` prints, run in-process through the script's main()."""
    python, script, *argv = shlex.split(command)
    assert python == "python" and script.endswith(".py")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        importlib.import_module(script[:-3]).main(argv)
    return out.getvalue()


@pytest.mark.parametrize("doc, command, block", generated_blocks(), ids=lambda v: v if v in DOCS else None)
def test_generated_block_is_what_its_command_prints(doc, command, block, monkeypatch):
    monkeypatch.chdir(HERE)
    assert block == output_of(command), f"{doc}: rerun `{command}` and paste its output between the markers"


def readme_tables():
    """The README's hand-written tables (outside the generated blocks), each as its rows of cells."""
    tables, rows = [], []
    for line in BLOCK.sub("", text("README.md")).splitlines() + [""]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            tables.append(rows)
            rows = []
    return {tuple(t[0]): t[2:] for t in tables}


def test_readme_tables_are_generated_or_checked():
    """Beside the generated blocks the README has two tables, each checked here against the code."""
    assert set(readme_tables()) == {("name", "params", "what it is"), ("file", "its one concern")}


def test_models_table_is_model_py():
    from model import MODELS, build_model, count_params, model_name, selected_model

    rows = readme_tables()[("name", "params", "what it is")]
    names = [name.split()[0].strip("`") for name, _, _ in rows]
    assert names == list(MODELS)
    for (name, params, _), key in zip(rows, names, strict=True):
        assert int(params.replace(",", "")) == count_params(build_model(key)), key
        assert ("(default)" in name) == (key == model_name(selected_model))


def test_layout_table_names_every_file():
    """Every file the layout table names exists, and every top-level file of the project is named (not what
    .gitignore leaves out: the checkpoint and sidecar `python train.py` writes here)."""
    rows = readme_tables()[("file", "its one concern")]
    named = {f for cell, _ in rows for f in re.findall(r"`([^`]+)`", cell)}
    for pattern in named:
        assert glob.glob(os.path.join(HERE, pattern)), f"README's layout table names {pattern}, which is not there"
    ignored = [line.strip() for line in text(".gitignore").splitlines() if line.strip()[:1] not in ("", "#", "!")]
    tracked = {os.path.basename(p) for ext in ("py", "md", "json", "html")
               for p in glob.glob(os.path.join(HERE, f"*.{ext}"))} - {"README.md"}
    tracked = {f for f in tracked if not any(fnmatch.fnmatch(f, pattern) for pattern in ignored)}  # a run's outputs
    unnamed = {f for f in tracked if not any(fnmatch.fnmatch(f, p) for p in named)}
    assert not unnamed, f"README's layout table leaves out {sorted(unnamed)}"


def test_the_result_tables_are_in_the_readme():
    commands = {command for doc, command, _ in generated_blocks() if doc == "README.md"}
    assert commands == {"python benchmark.py --markdown bench_cpu.json",
                        "python eval_sets.py --markdown eval_sets.json",
                        "python number_sets.py --markdown number_sets.json"}


def readme_flags():
    """(script, flag) for every `--flag` the README writes after `python SCRIPT.py` on one line."""
    for line in text("README.md").splitlines():
        for script, rest in re.findall(r"python (\w+)\.py\b([^`\n]*)", line):
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
                yield script, flag


def test_readme_names_only_flags_the_scripts_have():
    found = sorted(set(readme_flags()))
    assert ("train", "--model") in found and ("predict", "--evaluate") in found  # the parsing finds them
    for script, flag in found:
        parser = importlib.import_module(script).build_parser()
        assert flag in parser._option_string_actions, f"README: python {script}.py has no {flag}"


def test_train_flags_the_readme_lists_exist():
    """The flags the README's paragraph on training names, each with its value where it gives one."""
    import train

    line = re.search(r"Train another with (.+?)\n\n", text("README.md"), re.S).group(1)
    actions = train.build_parser()._option_string_actions
    flags = re.findall(r"`(?:python train\.py )?(--[a-z-]+)(?: \{([a-z,]+)\}| (\w+))?`", line)
    assert len(flags) >= 4
    for flag, choices, value in flags:
        assert flag in actions, f"README: train.py has no {flag}"
        if choices:
            assert sorted(choices.split(",")) == sorted(actions[flag].choices)
        if value:  # a named choice, or a variant for --model
            from model import MODELS

            assert value in (actions[flag].choices or MODELS)

"""`--help` of the jobs lists every config key with its default, the methods and the presets."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from forgetmi.cli import main as cli_main
from forgetmi.config import ExperimentConfig
from forgetmi.losses.forgetmi import PRESETS
from forgetmi.jobs.unlearn import main as unlearn_main
from forgetmi.unlearning import METHODS


def leaves(cls, prefix=""):
    """(dotted key, default) of every leaf field of a config dataclass."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            yield from leaves(tp, f"{prefix}{f.name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            yield f"{prefix}{f.name}", default


def help_text(capsys, run, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        run(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("job", ["train", "retrain", "unlearn"])
def test_every_config_key_is_listed_with_its_default(capsys, job):
    text = help_text(capsys, cli_main, [job, "--help"])
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  --")}
    for key, default in leaves(ExperimentConfig):
        if job != "unlearn" and key.startswith("unlearn."):
            assert f"--{key}" not in lines
            continue
        assert f"--{key}" in lines, key
        assert f"= {default!r}" in lines[f"--{key}"], (key, lines[f"--{key}"])
    # the help comes from the comments beside the fields
    assert "0 disables clipping" in lines["--train.max_grad_norm"]
    if job == "unlearn":
        for name in METHODS:
            assert f"\n  {name} " in text, name
        assert "unlearn.scrub" in text.split("unlearning methods")[1]
        for name in PRESETS:
            assert f"\n  {name} " in text.split("Forget-MI presets")[1], name


def test_launch_front_ends_show_the_same_keys(capsys):
    text = help_text(capsys, unlearn_main, ["--help"])
    assert "--unlearn.neggrad.retain_weight" in text and "no-noise" in text


def test_version_is_printed_on_stdout(capsys):
    from forgetmi import __version__
    from forgetmi.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"forgetmi {__version__}"


def test_choices_are_listed_as_the_user_types_them(capsys):
    from forgetmi.cli import main

    with pytest.raises(SystemExit):
        main(["unlearn", "--help"])
    text = capsys.readouterr().out
    assert "equal|unimodal|multimodal|retention|no-noise = 'unimodal'" in text
    assert "pull|push | None = None" in text and "Literal" not in text


def test_dependency_notices_show_only_with_verbose(capsys):
    """DeepSpeed prints "Setting accelerator to CPU" with its own handler on every CPU launch:
    hidden unless -v; its errors always show."""
    import logging

    from forgetmi.cli import hide_dependency_warnings

    deepspeed = logging.getLogger("DeepSpeed")
    handler = logging.StreamHandler()      # as DeepSpeed's own, writing to the current stderr
    deepspeed.addHandler(handler)
    try:
        hide_dependency_warnings(0)
        deepspeed.warning("Setting accelerator to CPU")
        deepspeed.error("a real failure")
        quiet = capsys.readouterr().err
        hide_dependency_warnings(1)
        deepspeed.warning("Setting accelerator to CPU")
        verbose = capsys.readouterr().err
    finally:
        deepspeed.removeHandler(handler)
        hide_dependency_warnings(1)
    assert "a real failure" in quiet and "accelerator" not in quiet
    assert "Setting accelerator to CPU" in verbose


def test_accelerate_and_transformers_notices_show_only_with_verbose(monkeypatch):
    """Their loggers' children (accelerate.utils.other, transformers.modeling_utils) log
    through the parents; transformers reads its level from the environment when imported."""
    import logging
    import os

    from forgetmi.cli import hide_dependency_warnings

    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    children = [logging.getLogger(n) for n in ("accelerate.utils.other",
                                               "transformers.modeling_utils")]
    try:
        hide_dependency_warnings(0)
        assert not any(c.isEnabledFor(logging.WARNING) for c in children)
        assert all(c.isEnabledFor(logging.ERROR) for c in children)
        assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"
        hide_dependency_warnings(1)
        assert all(c.isEnabledFor(logging.WARNING) for c in children)
        assert "TRANSFORMERS_VERBOSITY" not in os.environ
    finally:
        hide_dependency_warnings(1)

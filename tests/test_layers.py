"""The shape of the code: layers point down, and the Colorizer's options read the same in
every subcommand that builds one."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

SURFACES = ("colorize", "demo", "video", "serve", "evaluate", "bench")
SHARED = ("--device", "--size", "--batch-size", "--saturation")


def test_colorizing_does_not_import_the_training_stack():
    code = ("import sys, retint.inference, retint.cli, retint.video, retint.options; "
            "from retint import Colorizer; "
            "print(sorted(m for m in sys.modules if m.startswith(('retint.train', "
            "'retint.data', 'retint.losses', 'torch.distributed.fsdp'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_help_does_not_import_torch():
    code = "import sys, retint.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def _option_help(command: str) -> dict[str, str]:
    """``--flag`` -> its help text, from ``retint COMMAND --help`` (wrapping undone)."""
    text = subprocess.run([sys.executable, "-m", "retint", command, "--help"],
                          capture_output=True, text=True, check=True,
                          env={"COLUMNS": "200", "PATH": ""}).stdout
    options: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"\s{2}(-\w, )?(--[\w-]+)( [A-Z_{}.,\[\]]+)?\s*(.*)$", line)
        if m:
            current = m.group(2)
            options[current] = m.group(4).strip()
        elif current and line.startswith(" " * 10):
            options[current] = (options[current] + " " + line.strip()).strip()
        else:
            current = None
    return options


@pytest.fixture(scope="module")
def helps() -> dict[str, dict[str, str]]:
    return {c: _option_help(c) for c in SURFACES}


@pytest.mark.parametrize("flag", SHARED)
def test_shared_colorizer_options_read_the_same_everywhere(helps, flag):
    texts = {c: h.get(flag) for c, h in helps.items()}
    assert all(texts.values()), f"{flag} missing from {[c for c, t in texts.items() if not t]}"
    assert len(set(texts.values())) == 1, texts


def test_model_option_is_one_of_two_forms(helps):
    forms = {h["--model"] for h in helps.values()}
    assert len(forms) <= 2 and all("default" in f and "teacher" in f for f in forms)


def test_no_surface_keeps_an_old_spelling(helps):
    for command, h in helps.items():
        assert not {"--working-size", "--batch", "--workers"} & set(h), command

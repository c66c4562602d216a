"""Every script's command line stays what users and their scripts rely on.

``tests/data/cli_flags.json`` records each script's flags and positional arguments; a flag
renamed or dropped by a refactor breaks someone's command, so any change must be made
here on purpose.
"""
from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

EXPECTED = json.loads((ROOT / "tests" / "data" / "cli_flags.json").read_text())


class _Parsed(Exception):
    """Raised instead of parsing: carries the parser a script built."""


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_every_script_keeps_its_flags(script, monkeypatch):
    parser = _parser(script, monkeypatch)
    flags = sorted(s for action in parser._actions for s in action.option_strings)
    positionals = [a.dest for a in parser._actions if not a.option_strings]
    assert {"flags": flags, "positionals": positionals} == EXPECTED[script]


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_every_flag_says_its_default_in_help(script, monkeypatch):
    parser = _parser(script, monkeypatch)
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction)) \
                or action.dest == "config" or not action.option_strings:
            continue  # a switch is off unless given; --config has no default
        assert "(default" in action.help, action.option_strings


def _parser(script: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser ``script`` builds, caught before it parses."""
    def capture(parser, args=None, namespace=None):
        raise _Parsed(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(_Parsed) as caught:
        importlib.import_module(script).main([])
    return caught.value.args[0]


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_a_script_run_without_the_environment_says_how_to_run_it(script):
    # -S leaves site-packages out: the Python a user gets outside the project's .venv.
    result = subprocess.run([sys.executable, "-S", str(ROOT / f"{script}.py"), "--help"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and ".venv/bin/python" in line

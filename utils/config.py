"""A dataclass is the config: every field becomes a flag, and ``--config run.json`` loads one.

Precedence: dataclass defaults < ``--config`` file < flags given on the command line.
Field metadata may carry ``help`` and ``choices``; choices are checked for values coming
from a JSON file too, so a typo in a saved config is as clear as a typo in a flag.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

from utils.cli import ArgumentParser, UserError

T = TypeVar("T")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(cls: type, description: str = "") -> ArgumentParser:
    """An argument parser with one flag per dataclass field, plus ``--config``."""
    parser = ArgumentParser(description=description,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="JSON file of settings (flags given here override it)")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        help_text = f.metadata.get("help", "")
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is tuple:
            kwargs.update(nargs=len(typing.get_args(kind)), type=typing.get_args(kind)[0],
                          metavar=tuple(s.upper() for s in ("h", "w")[:len(typing.get_args(kind))]))
        else:
            kwargs["type"] = kind
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(_flag(f.name), **kwargs)
    return parser


def from_dict(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
    """Build ``cls`` from a dict, checking names, types and choices."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        if name not in fields:
            raise UserError(f"{source}: unknown setting {name!r}")
        kind = hints[name]
        try:
            if typing.get_origin(kind) is tuple:
                value = tuple(typing.get_args(kind)[0](v) for v in value)
            elif kind is bool and not isinstance(value, bool):
                raise TypeError
            else:
                value = kind(value)
        except (TypeError, ValueError):
            raise UserError(f"{source}: {name} = {value!r} is not a valid {kind.__name__ if isinstance(kind, type) else kind}") from None
        choices = fields[name].metadata.get("choices")
        if choices and value not in choices:
            raise UserError(f"{source}: {name} = {value!r}; choose from {', '.join(map(str, choices))}")
        kwargs[name] = value
    return cls(**kwargs)


def load_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object, with a one-line error for a missing or malformed file."""
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a valid JSON config ({exc})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: a config must be a JSON object")
    return values


def parse(cls: type[T], argv: Sequence[str] | None = None, description: str = "",
          ) -> tuple[T, set[str]]:
    """Parse the command line into ``cls``; also return the names the user set explicitly."""
    args = vars(build_parser(cls, description).parse_args(argv))
    config_file = args.pop("config", None)
    values = load_json(config_file) if config_file else {}
    explicit = set(values) | set(args)
    # Flags were already checked by argparse: what from_dict can reject comes from the file.
    return from_dict(cls, {**values, **args}, source=config_file or "command line"), explicit


def to_dict(config) -> dict[str, Any]:
    """JSON-ready dict of a config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}

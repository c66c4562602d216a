"""A dataclass is the config: every field becomes a flag, and ``--config run.json`` loads one.

Precedence: dataclass defaults < ``--config`` file < flags given on the command line.
Fields are declared with :func:`setting`: a help text, optional ``choices`` and an optional
``valid`` range (:func:`at_least`, :func:`between`).  Every value is checked for type and
range whichever way it came in, before anything is written: ``"epochs": 1.5``,
``"batch_size": true``, ``--lr nan`` or ``--seed 1e20`` are one-line errors, never a
truncated number, a crash deep in a run, or a run folder left behind.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

from utils.cli import ArgumentParser, UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Range:
    """An allowed interval of a number, with the words to say it."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    why: str = ""  #: said after the range, in parentheses

    def __contains__(self, value) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return math.isfinite(value) and above and value <= self.high

    def __str__(self) -> str:
        if self.high == math.inf:
            text = f"{'above' if self.low_open else 'at least'} {self.low:g}"
        else:
            text = f"between {self.low:g} and {self.high:g}"
        return f"{text} ({self.why})" if self.why else text


def at_least(low: float, why: str = "") -> Range:
    return Range(low, why=why)


def above(low: float) -> Range:
    return Range(low, low_open=True)


def between(low: float, high: float) -> Range:
    return Range(low, high)


def setting(default, help: str, choices: Sequence | None = None, valid: Range | None = None,
            auto: str | None = None):
    """A config field.  ``auto`` says how the value is chosen when not given (the dataclass
    default is then only the fallback), for ``--help`` and the run's plan."""
    metadata = {"help": help, "choices": tuple(choices) if choices else None,
                "valid": valid, "auto": auto}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base(kind):
    """``int`` of ``int | None``: the type a flag's text converts to."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(kind) if a is not type(None))
    return kind


def build_parser(cls: type, description: str = "") -> ArgumentParser:
    """An argument parser with one flag per dataclass field, plus ``--config``.

    Every flag's help ends with its default (or how it is chosen), since flags are absent
    from the parsed result unless given: the caller learns which settings were explicit.
    """
    parser = ArgumentParser(description=description)
    parser.add_argument("--config", help="JSON file of settings (flags given here override it)")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = _base(hints[f.name])
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = f.metadata.get("help", "")
        help_text += (f" (default: {f.metadata['auto']}; else {shown})" if f.metadata.get("auto")
                      else f" (default: {shown})")
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS,
                                  "help": help_text.replace("%", "%%")}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is tuple:
            count = len(typing.get_args(kind))
            kwargs.update(nargs=count, type=typing.get_args(kind)[0],
                          metavar=tuple(s.upper() for s in ("h", "w")[:count]))
        else:
            kwargs["type"] = kind
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(_flag(f.name), **kwargs)
    return parser


def from_dict(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
    """Build ``cls`` from a dict, checking names, types, choices and ranges."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        if name not in fields:
            raise UserError(f"{source}: unknown setting {name!r}")
        kwargs[name] = _checked(name, value, hints[name], fields[name].metadata, source)
    return cls(**kwargs)


def _checked(name: str, value, kind, metadata, source: str):
    """``value`` as the field's type; a :class:`UserError` unless exactly that."""
    optional = _base(kind) is not kind
    kind = _base(kind)
    what = f"{source}: {name} = {value!r}"
    if value is None and optional:
        return None
    if typing.get_origin(kind) is tuple:
        parts = typing.get_args(kind)
        if not isinstance(value, (list, tuple)) or len(value) != len(parts):
            raise UserError(f"{what} is not {len(parts)} numbers")
        value = tuple(_scalar(v, parts[0], what) for v in value)
    else:
        value = _scalar(value, kind, what)
    choices, valid = metadata.get("choices"), metadata.get("valid")
    if choices and value not in choices:
        raise UserError(f"{what}; choose from {', '.join(map(str, choices))}")
    if valid is not None and not all(v in valid for v in (value if isinstance(value, tuple)
                                                          else (value,))):
        raise UserError(f"{_flag(name)} must be {valid}, not {value!r}"
                        + ("" if source == "command line" else f" ({source})"))
    return value


def _scalar(value, kind: type, what: str):
    """One value of type ``kind``: no bool for a number, no fraction for a whole number."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(value, kind):
        return value
    raise UserError(f"{what} is not a valid {kind.__name__}")


def load_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object, with a one-line error for a missing or malformed file."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
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
    checked = from_dict(cls, values, source=config_file) if config_file else None
    flags = from_dict(cls, args, source="command line")
    merged = {**({k: getattr(checked, k) for k in values} if checked else {}),
              **{k: getattr(flags, k) for k in args}}
    return dataclasses.replace(cls(), **merged), explicit


def to_dict(config) -> dict[str, Any]:
    """JSON-ready dict of a config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


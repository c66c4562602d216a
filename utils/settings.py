"""One settings system for every script: a dataclass is the command line.

Each script's settings are a dataclass whose fields are declared with :func:`setting`: a
help text, optional ``choices``, an optional ``valid`` range (:func:`at_least`,
:func:`between`, :func:`above`) and how the flag looks (a positional argument, a switch, a
metavar).  :func:`parse` builds the parser from the fields, so every flag's help ends with
its default, and checks every value for type and range whichever way it came in, before
anything is written: ``"epochs": 1.5``, ``"batch_size": true``, ``--lr nan`` or
``--seed 1e20`` are one-line errors, never a truncated number, a crash deep in a run, or a
run folder left behind.  A dataclass may add a ``check()`` method for rules between its
fields; it runs after every value is in.

``train.py`` also takes ``--config run.json``.  Precedence: dataclass defaults <
``--config`` file < flags given on the command line.
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

#: Limits every script shares, so a typo or a hostile value is refused before it costs
#: anything: images in one batch, processes decoding images, epochs (and counts of them).
MAX_BATCH = 65536
MAX_WORKERS = 256
MAX_EPOCHS = 100_000


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
        low, high = _number(self.low), _number(self.high)
        if self.high == math.inf:
            text = f"{'above' if self.low_open else 'at least'} {low}"
        elif self.low_open:
            text = f"above {low} and at most {high}"
        else:
            text = f"between {low} and {high}"
        return f"{text} ({self.why})" if self.why else text

    def violated(self, value) -> str:
        """The bound ``value`` breaks, in words: "at least 1" for 0, "at most 65536" for a
        million, the whole range for NaN or infinity."""
        if math.isfinite(value) and (value <= self.low if self.low_open else value < self.low):
            text = f"{'above' if self.low_open else 'at least'} {_number(self.low)}"
            return f"{text} ({self.why})" if self.why else text
        if math.isfinite(value) and value > self.high:
            return f"at most {_number(self.high)}"
        return str(self)


def _number(x: float) -> str:
    """A bound as a person types it: whole numbers in full (a seed's 4294967295, not 4.3e+09)."""
    return str(int(x)) if math.isfinite(x) and x == int(x) else f"{x:g}"


def at_least(low: float, why: str = "", high: float = math.inf) -> Range:
    return Range(low, high, why=why)


def above(low: float, high: float = math.inf, why: str = "") -> Range:
    return Range(low, high, low_open=True, why=why)


def between(low: float, high: float, why: str = "") -> Range:
    return Range(low, high, why=why)


def setting(default, help: str, choices: Sequence | None = None, valid: Range | None = None,
            auto: str | None = None, *, flag: str | None = None, metavar=None,
            positional: bool = False, switch: bool = False, group: str | None = None):
    """A settings field.

    Args:
        default: the value when not given (a tuple default becomes a fresh tuple).
        help: what it does; the default is appended in ``--help``.
        choices: the allowed values.
        valid: the allowed range of a number (each element of a tuple of numbers).
        auto: how the value is chosen when not given (the default is then only the
            fallback), for ``--help`` and the training plan.
        flag: the flag's name when it is not the field's (``--from`` for ``source``).
        metavar: how ``--help`` names the value.
        positional: an argument without a flag (a tuple field takes any number).
        switch: a boolean flag without a ``--no-`` form (off unless given).
        group: the ``--help`` section the flag is listed in.
    """
    metadata = {"help": help, "choices": tuple(choices) if choices else None, "valid": valid,
                "auto": auto, "flag": flag, "metavar": metavar, "positional": positional,
                "switch": switch, "group": group}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_of(f: dataclasses.Field) -> str:
    """The command-line spelling of a field: ``--batch-size`` for ``batch_size``."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _base(kind):
    """``int`` of ``int | None``: the type a flag's text converts to."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(kind) if a is not type(None))
    return kind


def _tuple_parts(kind) -> tuple[type, int | None] | None:
    """``(element type, length)`` of ``tuple[int, int]`` (length 2) or ``tuple[str, ...]``
    (length None); None for other types."""
    if typing.get_origin(kind) is not tuple:
        return None
    args = typing.get_args(kind)
    if len(args) == 2 and args[1] is Ellipsis:
        return args[0], None
    return args[0], len(args)


def _shown(value) -> str:
    if value is None:
        return "none"
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def build_parser(cls: type, description: str = "", config_file: bool = False
                 ) -> ArgumentParser:
    """An argument parser with one argument per field of dataclass ``cls``.

    Every flag's help ends with its default (or how it is chosen).  Flags are absent from
    the parsed result unless given, so the caller learns which settings were explicit.
    """
    parser = ArgumentParser(description=description,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    if config_file:
        parser.add_argument("--config", help="JSON file of settings (flags given here "
                            "override it)")
    groups: dict[str | None, Any] = {None: parser}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta:
            continue  # not a setting (a field the code fills in)
        kind = _base(hints[f.name])
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        help_text = meta["help"]
        if meta.get("auto"):
            help_text += f" (default: {meta['auto']}" + (
                f"; else {_shown(default)})" if default is not None else ")")
        elif not (meta.get("switch") or meta.get("positional") and not default):
            help_text += f" (default: {_shown(default)})"
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS,
                                  "help": help_text.replace("%", "%%")}
        parts = _tuple_parts(kind)
        if kind is bool:
            kwargs["action"] = "store_true" if meta.get("switch") \
                else argparse.BooleanOptionalAction
        elif parts is not None:
            element, count = parts
            kwargs.update(type=element, nargs=count or ("*" if meta.get("positional") else "+"))
            if count == 2 and meta.get("metavar") is None:
                kwargs["metavar"] = ("H", "W")
        else:
            kwargs["type"] = kind
            if meta.get("positional"):
                kwargs["nargs"] = "?"
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if meta.get("metavar") is not None:
            kwargs["metavar"] = meta["metavar"]
        group = meta.get("group")
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        if meta.get("positional"):
            groups[group].add_argument(f.name, **kwargs)
        else:
            groups[group].add_argument(flag_of(f), dest=f.name, **kwargs)
    return parser


def from_dict(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
    """Build ``cls`` from a dict, checking names, types, choices and ranges."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        if name not in fields:
            raise UserError(f"{source}: unknown setting {name!r}")
        kwargs[name] = _checked(fields[name], value, hints[name], source)
    return cls(**kwargs)


def _checked(f: dataclasses.Field, value, kind, source: str):
    """``value`` as the field's type; a :class:`UserError` unless exactly that."""
    optional = _base(kind) is not kind
    kind = _base(kind)
    shown_name = f.name if f.metadata.get("positional") else flag_of(f)
    what = f"{source}: {f.name} = {value!r}"
    if value is None and optional:
        return None
    parts = _tuple_parts(kind)
    if parts is not None:
        element, count = parts
        if not isinstance(value, (list, tuple)) or (count is not None and len(value) != count):
            raise UserError(f"{what} is not {count or 'a list of'} "
                            f"{'numbers' if element in (int, float) else 'values'}")
        value = tuple(_scalar(v, element, what) for v in value)
    else:
        value = _scalar(value, kind, what)
    choices, valid = f.metadata.get("choices"), f.metadata.get("valid")
    values = value if isinstance(value, tuple) else (value,)
    if choices and not all(v in choices for v in values):
        raise UserError(f"{what}; choose from {', '.join(map(str, choices))}")
    outside = [v for v in values if v not in valid] if valid is not None else []
    if outside:
        raise UserError(f"{shown_name} must be {valid.violated(outside[0])}, not {_shown(value)}"
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


def parse(cls: type[T], argv: Sequence[str] | None = None, description: str = "", *,
          config_file: bool = False) -> tuple[T, set[str]]:
    """Parse the command line into ``cls``; also return the names the user set explicitly.

    With ``config_file``, ``--config FILE`` loads settings that the flags override.  The
    result's ``check()`` method, if it has one, runs last.
    """
    args = vars(build_parser(cls, description, config_file).parse_args(argv))
    config = args.pop("config", None)
    values = load_json(config) if config else {}
    explicit = set(values) | set(args)
    checked = from_dict(cls, values, source=config) if config else None
    flags = from_dict(cls, args, source="command line")
    merged = {**({k: getattr(checked, k) for k in values} if checked else {}),
              **{k: getattr(flags, k) for k in args}}
    result = dataclasses.replace(cls(), **merged)
    if hasattr(result, "check"):
        result.check()
    return result, explicit


def to_dict(config) -> dict[str, Any]:
    """JSON-ready dict of a config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(config).items()}

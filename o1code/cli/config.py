"""One config story for every command: a dataclass holds the defaults; flags and TOML files override them.

A command's settings are one dataclass (e.g. `EvalConfig`). `add_config_flags` gives it one flag per
field: ``--run-dir`` for ``run_dir``, typed from the annotation (``int``, ``float``, ``str``, ``bool``
as ``--x/--no-x``, ``list[T]`` as comma-separated values, each optionally ``| None``); its help is
the field's ``metadata["help"]`` (else its entry in an ``Attributes:`` section of the class docstring,
Google style) followed by the dataclass default. ``metadata`` may also give
argparse ``choices``, a ``metavar``, and ``flags`` (the option strings, when not ``--field-name``).
Every flag's argparse default is None ("not given"), so `config_from_args` can lay the flags given over
a ``--config`` TOML file over the dataclass defaults::

    @dataclass
    class TrainConfig:
        lr: float = field(default=5e-4, metadata={"help": "learning rate"})

    add_config_flags(parser, TrainConfig)          # --lr X  learning rate (default: 0.0005)
    parser.add_argument("--config", metavar="TOML")
    cfg = config_from_args(TrainConfig, args)      # defaults < the TOML file < the flags given

Unknown keys in a file are a `ConfigError` naming them and the valid keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
import types
import typing
from typing import Any, Iterable, Mapping, Sequence, TypeVar

from o1code.errors import ConfigError

T = TypeVar("T")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def docstring_attributes(cls: type) -> dict[str, str]:
    """The entries of the ``Attributes:`` section of `cls`'s docstring (Google style: ``name: text``,
    or ``a, b: text`` for several fields, continued on more-indented lines), one text per name."""
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "Attributes:"]
    if not starts:
        return {}
    section_indent = len(lines[starts[0]]) - len(lines[starts[0]].lstrip())
    entries: list[tuple[list[str], list[str]]] = []
    entry_indent = None
    for line in lines[starts[0] + 1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= section_indent:
            break  # the next section
        match = re.fullmatch(r"([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*:\s*(.*)", line.strip())
        if match and (entry_indent is None or indent <= entry_indent):
            entry_indent = indent
            entries.append(([n.strip() for n in match.group(1).split(",")], [match.group(2)]))
        elif entries:
            entries[-1][1].append(line.strip())
    return {name: " ".join(text).strip() for names, text in entries for name in names}


def _converter(cls: type, name: str, annotation: Any) -> tuple[str, Any]:
    """("bool", None), ("list", item type) or ("value", type) for a field's annotation."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            annotation = members[0]
    if annotation is bool:
        return "bool", None
    if annotation is list or typing.get_origin(annotation) is list:
        item = (typing.get_args(annotation) or (str,))[0]
        if item in (int, float, str):
            return "list", item
    if annotation in (int, float, str):
        return "value", annotation
    raise TypeError(f"{cls.__name__}.{name}: no command-line flag for type {annotation!r}")


def _comma_list(item: type):
    def parse(text: str) -> list:
        return [item(t.strip()) for t in text.split(",") if t.strip()]

    parse.__name__ = f"comma-separated {item.__name__}"  # argparse's "invalid ... value" message
    return parse


def add_config_flags(parser: argparse.ArgumentParser, cls: type, *, exclude: Iterable[str] = (),
                     exclusive: Iterable[Sequence[str]] = ()) -> None:
    """Add one flag per field of dataclass `cls` to `parser` (all but `exclude`); each pair or tuple
    of field names in `exclusive` becomes a mutually exclusive group. Every flag defaults to None
    (not given): read the given ones with `given_flags` or build the config with `config_from_args`."""
    hints = typing.get_type_hints(cls)
    documented: dict[str, str] = {}
    for base in reversed(cls.__mro__):  # a subclass's entries override its bases' (inherited fields keep theirs)
        documented.update(docstring_attributes(base))
    skip = set(exclude)
    groups: dict[str, Any] = {}
    for names in exclusive:
        group = parser.add_mutually_exclusive_group()
        groups.update({n: group for n in names})
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        meta: Mapping[str, Any] = f.metadata
        kind, item = _converter(cls, f.name, hints[f.name])
        default = _default(f)
        text = meta.get("help", documented.get(f.name, ""))
        if default is not None and default != "" and default != []:  # an empty default says nothing
            text = f"{text} (default: {_shown(default)})" if text else f"default: {_shown(default)}"
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": text.replace("%", "%%")}
        if kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _comma_list(item) if kind == "list" else item
            for key in ("choices", "metavar"):
                if key in meta:
                    kwargs[key] = meta[key]
        flags = meta.get("flags") or ("--" + f.name.replace("_", "-"),)
        groups.get(f.name, parser).add_argument(*flags, **kwargs)


def given_flags(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` given as flags on the command line (those not None in `args`)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """The tables of a TOML file; `ConfigError` when it is missing or not valid TOML."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None


def check_keys(cls: type, data: Mapping[str, Any], source: str | os.PathLike = "config") -> None:
    """Raise `ConfigError` naming the keys of `data` that are not fields of `cls`, and the valid ones."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{source}: unknown config keys: {', '.join(unknown)} (valid keys: {', '.join(names)})")


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """An instance of dataclass `cls`: its defaults, overridden by the ``--config`` TOML file's keys
    (``args.config``, when given; checked against the fields), overridden by the flags given."""
    data: dict[str, Any] = {}
    path = getattr(args, "config", None)
    if path:
        data = read_toml(path)
        check_keys(cls, data, path)
    data.update(given_flags(args, cls))
    return cls(**data)


__all__ = ["add_config_flags", "check_keys", "config_from_args", "docstring_attributes", "given_flags", "read_toml"]

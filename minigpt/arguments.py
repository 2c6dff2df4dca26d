"""Dataclass fields as command-line flags: one builder for every settings object that has a command.

A field declared with ``option(default, help)`` carries its one-line doc in its metadata; that doc is the
flag's help. ``add_dataclass_arguments`` adds a ``--flag`` per field, its type read from the annotation
(``int``, ``float``, ``str``, ``bool``, ``X | None``, ``tuple[X, ...]``); ``dataclass_from_args`` builds the
dataclass back from the parsed namespace, so the object's own checks run on what was typed.

>>> from dataclasses import dataclass
>>> @dataclass
... class Run:
...     steps: int = option(10, "how many steps")
...     rate: float | None = option(None, "learning rate; none = the schedule's")
>>> parser = argparse.ArgumentParser()
>>> add_dataclass_arguments(parser, Run)
['steps', 'rate']
>>> dataclass_from_args(Run, parser.parse_args(["--steps", "3", "--rate", "none"]))
Run(steps=3, rate=None)
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any

# what a scalar annotation reads its flag's text with
_PARSERS: dict[type, Callable[[str], object]] = {int: int, float: float, str: str}


def option(default: object, help: str, *, name: str | None = "", **flag: object) -> Any:
    """A dataclass field with a default and a one-line doc, the help of its command-line flag.

    The flag is ``--field-name`` unless ``name`` says otherwise (``name=None``: the field has no flag);
    ``flag`` are argparse keywords that replace or add to those the annotation gives (``type``,
    ``metavar``, ``action``, ``choices``, ``nargs``).

    >>> option(0.8, "<1 sharpens, >1 flattens").metadata["help"]
    '<1 sharpens, >1 flattens'
    """
    return dataclasses.field(default=default, metadata={"help": help, "name": name, "flag": flag})


def _none_or(parse: Callable[[str], object]) -> Callable[[str], object]:
    """A flag reader for ``X | None``: the word ``none`` is None, anything else is read as ``X``."""

    def read(text: str) -> object:
        return None if text.lower() == "none" else parse(text)

    read.__name__ = getattr(parse, "__name__", "value")  # argparse names it in "invalid int value"
    return read


def _flag_keywords(annotation: object) -> dict[str, object]:
    """argparse keywords for a field annotated ``annotation``: bool, a scalar, ``X | None``, ``tuple[X, ...]``."""
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if annotation in _PARSERS:
        return {"type": _PARSERS[annotation]}
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) and len(args) == 2 and args[1] is type(None) and args[0] in _PARSERS:
        return {"type": _none_or(_PARSERS[args[0]])}
    if typing.get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _PARSERS:
        return {"type": _PARSERS[args[0]], "nargs": "+"}
    raise TypeError(f"no flag for a field annotated {annotation!r}: give option(..., type=…) or flag=None")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    defaults: Mapping[str, object] | None = None,
    suppress: bool = False,
    only: Collection[str] | None = None,
) -> list[str]:
    """Add a ``--flag`` for every field of the dataclass ``cls`` that has one; return their names.

    The help is the field's doc (``option``) and its default. ``defaults`` replace the fields' own
    defaults for this command; ``only`` keeps the flags of those fields alone; ``suppress=True`` leaves
    flags that are not given out of the namespace, so a caller can tell "not given" from "given the
    default".

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Plot:
    ...     dpi: int = option(100, "dots per inch")
    ...     grid: bool = option(False, "draw a grid")
    >>> parser = argparse.ArgumentParser()
    >>> add_dataclass_arguments(parser, Plot, defaults={"dpi": 200})
    ['dpi', 'grid']
    >>> vars(parser.parse_args(["--grid"]))
    {'dpi': 200, 'grid': True}
    """
    hints = typing.get_type_hints(cls)
    defaults = defaults or {}
    names = []
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata or f.metadata["name"] is None or (only is not None and f.name not in only):
            continue
        default = defaults.get(f.name, f.default)
        keywords = _flag_keywords_or_given(hints[f.name], f.metadata["flag"])
        if keywords.get("action") is None or "metavar" in keywords:  # a switch (--grid/--no-grid) has none
            keywords.setdefault("metavar", f.name.upper())
        parser.add_argument(
            f.metadata["name"] or "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=argparse.SUPPRESS if suppress else default,
            help=f"{f.metadata['help']} (default: {default})",
            **keywords,
        )
        names.append(f.name)
    return names


def _flag_keywords_or_given(annotation: object, given: Mapping[str, object]) -> dict[str, object]:
    """The keywords ``option`` gave for the flag, or else those the annotation implies."""
    if "type" in given:
        return dict(given)
    return {**_flag_keywords(annotation), **given}


def dataclass_from_args(cls: type, args: argparse.Namespace, **values: object) -> Any:
    """``cls`` built from the parsed ``args`` (the fields found there) and ``values``, which win.

    ``nargs="+"`` lists become tuples, the type a frozen settings object keeps.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Run:
    ...     sizes: tuple[int, ...] = option((1,), "batch sizes")
    >>> dataclass_from_args(Run, argparse.Namespace(sizes=[1, 8], other=3))
    Run(sizes=(1, 8))
    """
    given = vars(args)
    found = {f.name: given[f.name] for f in dataclasses.fields(cls) if f.name in given}
    found = {name: tuple(v) if isinstance(v, list) and _is_tuple(cls, name) else v for name, v in found.items()}
    return cls(**{**found, **values})


def _is_tuple(cls: type, name: str) -> bool:
    return typing.get_origin(typing.get_type_hints(cls)[name]) is tuple

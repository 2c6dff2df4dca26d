"""Argument checks every module shares, so that bad input fails the same way everywhere, before any work.

Each check names the parameter, the value given and what is allowed. The wrong kind of value (a string, a
float where an integer belongs, a bool anywhere) is a ``TypeError``; the right kind out of range a
``ValueError``. Python counts ``True`` as the integer 1; we do not.

>>> check_int("max_new_tokens", -1, 0)
Traceback (most recent call last):
    ...
ValueError: max_new_tokens must be an integer >= 0, got -1
>>> check_real("top_p", "0.9", "in (0, 1]", lambda v: 0 < v <= 1)
Traceback (most recent call last):
    ...
TypeError: top_p must be in (0, 1], got '0.9'
"""

from __future__ import annotations

import dataclasses
import numbers
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import NoReturn

import torch


def _fail(error: type[Exception], name: str, value: object, allowed: str) -> NoReturn:
    """Raise ``error`` with the one message format of the whole library."""
    raise error(f"{name} must be {allowed}, got {value!r}")


def check_int(name: str, value: object, low: int, *, high: int | None = None, also: str | None = None) -> None:
    """Raise unless ``value`` is an integer in [``low``, ``high``]; ``also`` names what else the caller accepts.

    >>> check_int("top_k", 2.5, 1, also="None")
    Traceback (most recent call last):
        ...
    TypeError: top_k must be an integer >= 1 or None, got 2.5
    """
    allowed = f"an integer >= {low}" if high is None else f"an integer between {low} and {high}"
    allowed += f" or {also}" if also else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(TypeError, name, value, allowed)
    if value < low or (high is not None and value > high):
        _fail(ValueError, name, value, allowed)


def check_real(name: str, value: object, allowed: str, ok: Callable[[float], bool]) -> None:
    """Raise unless ``value`` is a real number (not a bool) for which ``ok`` holds; NaN fails any range.

    >>> check_real("temperature", float("nan"), "a finite number >= 0", lambda v: 0 <= v < float("inf"))
    Traceback (most recent call last):
        ...
    ValueError: temperature must be a finite number >= 0, got nan
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _fail(TypeError, name, value, allowed)
    if not ok(value):
        _fail(ValueError, name, value, allowed)


def check_choice(name: str, value: object, allowed: Collection[str]) -> None:
    """Raise unless ``value`` is one of ``allowed``.

    >>> check_choice("dtypes", "fp16", ("fp32", "bf16"))
    Traceback (most recent call last):
        ...
    ValueError: dtypes must be one of fp32, bf16, got 'fp16'
    """
    if value not in allowed:
        _fail(ValueError, name, value, f"one of {', '.join(allowed)}")


DEVICE_TYPES = ("cpu", "cuda", "mps")  # what minigpt runs on; torch knows more (meta, xpu …) that we do not test


def check_device(name: str, value: object) -> torch.device:
    """Return ``value`` as a ``torch.device`` this machine has, or raise before anything is moved there.

    Allowed: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` (or the same as a ``torch.device``). A device
    torch knows but this machine lacks (``"cuda"`` without a GPU) is a ``ValueError`` that lists what is
    available here, rather than torch's error from deep inside the first ``.to(device)``.

    >>> check_device("device", "cpu")
    device(type='cpu')
    >>> check_device("device", "gpu")
    Traceback (most recent call last):
        ...
    ValueError: device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got 'gpu'
    """
    allowed = "'cpu', 'cuda', 'cuda:N' or 'mps'"
    if not isinstance(value, (str, torch.device)):
        _fail(TypeError, name, value, f"a str or torch.device: {allowed}")
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):  # torch's parser: "Expected one of cpu, cuda, … device type at start of …"
        device = None  # fail outside the except block, so torch's message is not chained onto ours
    if device is None or device.type not in DEVICE_TYPES:
        _fail(ValueError, name, value, allowed)
    available = available_devices()
    if device.type == "cpu" or str(device) in available or (device.index is None and device.type in available):
        return device
    missing = {"cuda": "CUDA is not available", "mps": "MPS is not available"}
    why = missing[device.type] if device.type not in available else f"no {device} on this machine"
    _fail(ValueError, name, value, f"a device this machine has (available: {', '.join(available)}; {why})")


def available_devices() -> list[str]:
    """The devices of this machine minigpt can use: ``cpu``, then ``cuda`` and each ``cuda:N``, ``mps``.

    >>> available_devices()[0]
    'cpu'
    """
    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def check_writable_dir(name: str, path: str | Path) -> Path:
    """Make sure ``path`` is a directory this process can write in, created (with its parents) if missing.

    >>> import tempfile
    >>> check_writable_dir("out_dir", tempfile.mkdtemp() + "/new").is_dir()
    True
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{name}={str(path)!r} is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as e:
        raise ValueError(f"{name}={str(path)!r} is not a writable directory ({e.strerror})") from e
    return out


def _shown(value: object, limit: int = 80) -> str:
    """``value``'s repr, clipped to ``limit`` characters, and its type where the repr may not say it."""
    text = repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text if value is None else f"{text} ({type(value).__name__})"


def check_type(name: str, value: object, types: type | tuple[type, ...], allowed: str) -> None:
    """Raise a ``TypeError`` unless ``value`` is an instance of ``types``; ``allowed`` says so in words.

    The message shows the value (clipped: a prompt can be long) and its type, since ``b'Hi'`` and ``'Hi'``
    look alike at a glance.

    >>> check_type("prompt", b"Hi", str, "a str")
    Traceback (most recent call last):
        ...
    TypeError: prompt must be a str, got b'Hi' (bytes)
    """
    if not isinstance(value, types):
        raise TypeError(f"{name} must be {allowed}, got {_shown(value)}")


def check_keywords(settings: type, keywords: Collection[str], *, also: str = "") -> None:
    """Refuse a keyword that the dataclass ``settings`` lacks, or a field without a default left out.

    One sentence that names the keyword and the settings a caller may give, instead of Python's
    ``__init__()`` message, which names a class the caller never saw. ``also`` names the other settings
    the caller accepts (e.g. the logits settings, split off before this check).

    >>> from minigpt.search import BeamSettings
    >>> check_keywords(BeamSettings, ["num_beams"])
    Traceback (most recent call last):
        ...
    TypeError: max_new_tokens is required (it has no default), got only num_beams
    """
    fields = [f for f in dataclasses.fields(settings) if f.init]
    names = sorted(f.name for f in fields)
    unknown = sorted(set(keywords) - set(names))
    if unknown:
        raise TypeError(f"unknown setting {unknown[0]!r}: the settings are {', '.join(names)}{also}")
    for f in fields:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in keywords:
            raise TypeError(f"{f.name} is required (it has no default), got only {', '.join(keywords) or 'nothing'}")


def check_model(name: str, value: object) -> None:
    """Raise a ``TypeError`` unless ``value`` is a minigpt ``GPT``: every decoder calls this first.

    Any other module (an ``nn.Linear``, a transformers model) or a model's name would otherwise fail deep
    inside the decoder with an ``AttributeError`` about ``config`` or ``transformer``.

    >>> check_model("model", "gpt2")
    Traceback (most recent call last):
        ...
    TypeError: model must be a minigpt GPT (minigpt.model.GPT; load one by name or path with ...), got 'gpt2' (str)
    """
    from minigpt.model import GPT  # here, not at the top: model's own imports (kv_cache) may use these checks

    check_type(name, value, GPT, "a minigpt GPT (minigpt.model.GPT; load one by name or path with minigpt.load_model)")


# Temporary names beside a file or directory that minigpt builds and then renames into place in one step
# (the explorer page, the exports): beside it, not in /tmp, since a rename is atomic only within one file system.


def temp_beside(path: Path, kind: str) -> Path:
    """A fresh hidden name beside ``path`` to build it under before one rename: ``.NAME.RANDOM.KIND``.

    >>> temp_beside(Path("out/page.html"), "partial").name.startswith(".page.html.")
    True
    """
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.{kind}")


def remove_leftovers(path: Path, *kinds: str) -> list[Path]:
    """Delete what killed runs left beside ``path`` under ``temp_beside``'s names; return what was deleted.

    Only names of exactly that shape go (eight characters in the middle, as ``temp_beside`` and ``mkstemp``
    make them), so another file's temporaries (``.page.html.v2.…`` beside ``page.html``) are left alone.
    """
    shape = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.({'|'.join(map(re.escape, kinds))})")
    removed = [p for p in path.parent.iterdir() if shape.fullmatch(p.name)] if path.parent.is_dir() else []
    for leftover in removed:
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return removed


def write_failure(what: str, error: BaseException) -> str:
    """Why writing ``what`` failed, in words: an ``OSError``'s reason, or the one inside safetensors' error.

    >>> write_failure("out_dir='x'", OSError(28, "No space left on device"))
    "could not write out_dir='x' (No space left on device); nothing was left behind"
    """
    reason = getattr(error, "strerror", None) or str(error)
    found = re.search(r'message: "([^"]+)"', reason)  # safetensors: IoError(Os { code: 28, …, message: "…" })
    return f"could not write {what} ({found.group(1) if found else reason}); nothing was left behind"

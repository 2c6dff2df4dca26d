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

import numbers
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

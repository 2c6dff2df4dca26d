"""A time limit on one call of a student's function, so that a loop that never ends fails its check instead of hanging.

How to stop a function that does not return, from the same process, in a Jupyter kernel and in a script:

- ``SIGALRM`` (``signal.setitimer``): the timer interrupts the function wherever it is, even in
  ``time.sleep``, and raises in the caller's own thread, so the student's code runs exactly as if called
  directly (tracebacks, ``%debug``, printing, ``torch.no_grad`` state). Python runs signal handlers only in
  the main thread of the main interpreter, and only on Unix (Linux, macOS). That is where a Jupyter kernel
  runs a cell and where ``python script.py`` runs, so it is the first choice.
- Elsewhere (Windows, a check started from a thread, an alarm someone else has already set) the function
  runs in a worker thread and the caller waits at most the limit. Python cannot kill a thread, but
  CPython can raise an exception in it at its next bytecode, which stops a pure-Python loop; a call stuck
  inside C code runs on in the background, on copies of the inputs, while the check reports the timeout.
- A subprocess can be killed for sure, and a forked one inherits a function defined in a notebook with no
  pickling: where fork exists, the checkers (``minigpt.exercises.checking``) run the student's function in
  one, killed at the limit, and use this module only where they cannot (Windows, a daemonic process): a bare
  ``except:`` can swallow ``TimedOut`` and ``sys.exit()`` ends the process that called.

>>> call_with_time_limit(sum, ([1, 2, 3],), seconds=1.0)
6
>>> import time
>>> try:
...     call_with_time_limit(time.sleep, (5,), seconds=0.05)
... except TimedOut as error:
...     print(error)
did not return within 0.05 s
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any


class TimedOut(BaseException):
    """Raised into a function that ran past its time limit.

    A ``BaseException``, like ``KeyboardInterrupt``, so that a student's ``except Exception:`` cannot swallow
    it and carry on.

    >>> issubclass(TimedOut, Exception)
    False
    """


def call_with_time_limit(
    function: Callable, args: tuple = (), kwargs: Mapping[str, Any] | None = None, *, seconds: float
) -> Any:
    """Return ``function(*args, **kwargs)``, or raise ``TimedOut`` when it has not returned after ``seconds``.

    Exceptions the function raises come through unchanged.

    >>> call_with_time_limit(divmod, (7, 2), seconds=1.0)
    (3, 1)
    """
    if not seconds > 0:  # setitimer(…, 0) would switch the timer off instead of firing at once
        raise ValueError(f"seconds must be positive, got {seconds}")
    kwargs = kwargs or {}
    if _alarm_is_free():
        return _call_with_alarm(function, args, kwargs, seconds)
    return _call_in_worker_thread(function, args, kwargs, seconds)


def _alarm_is_free() -> bool:
    """True where this thread may set a SIGALRM timer without disturbing anyone else's."""
    return (
        hasattr(signal, "setitimer")  # Unix only
        and threading.current_thread() is threading.main_thread()  # handlers run in the main thread only
        and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no alarm of someone else's pending
        and signal.getsignal(signal.SIGALRM) is not None  # None: a handler set from C, which we could not restore
    )


def _call_with_alarm(function: Callable, args: tuple, kwargs: Mapping[str, Any], seconds: float) -> Any:
    def on_alarm(signum: int, frame: object) -> None:
        raise TimedOut(f"did not return within {seconds:g} s")

    try:
        previous = signal.signal(signal.SIGALRM, on_alarm)
    except ValueError:  # not the main interpreter (a subinterpreter): the thread still works
        return _call_in_worker_thread(function, args, kwargs, seconds)
    try:
        # one shot, not repeating: at most one TimedOut is ever raised, so the cleanup below cannot be
        # interrupted by a second one and leave the timer running
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return function(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, previous)


def _call_in_worker_thread(function: Callable, args: tuple, kwargs: Mapping[str, Any], seconds: float) -> Any:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:  # handed to the caller, TimedOut included
            outcome["error"] = error

    worker = threading.Thread(target=run, name="student function", daemon=True)  # daemon: never blocks exit
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        _raise_in(worker)
        raise TimedOut(f"did not return within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _raise_in(thread: threading.Thread) -> None:
    """Ask CPython to raise ``TimedOut`` in ``thread`` at its next bytecode (the only way to stop a thread)."""
    if thread.ident is not None and hasattr(ctypes, "pythonapi"):  # CPython
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(TimedOut))

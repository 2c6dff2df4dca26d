"""Check functions for the exercise notebooks, one module per chapter.

Each ``check_…`` takes the function a student wrote, runs it on hidden cases against the library's own
version (on copies of the inputs, with a time limit per case), prints ✓, or ✗ with the failing input,
expected and got, and returns that verdict as a ``CheckResult``.
"""

from minigpt.exercises.checking import Case, CheckResult, check

__all__ = ["Case", "CheckResult", "check"]

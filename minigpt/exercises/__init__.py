"""Check functions for the exercise notebooks, one module per chapter.

Each ``check_…`` takes the function a student wrote, runs it on hidden cases against the library's own
version and returns a ``CheckResult`` that prints ✓, or ✗ with the failing input, expected and got.
"""

from minigpt.exercises.checking import Case, CheckResult, check

__all__ = ["Case", "CheckResult", "check"]

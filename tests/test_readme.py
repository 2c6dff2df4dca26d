"""The README's two commands are what a new user types: keep them true."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)


def test_readme_opens_with_the_two_commands():
    first_line = README.splitlines()[0]
    assert first_line == "# minigpt"
    setup, tests = BLOCKS[0], BLOCKS[1]
    assert README.index(setup) < README.index(tests) < README.index("## What minigpt is")
    # torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build
    assert setup.index("pip install torch==2.13.0") < setup.index('pip install -e ".[dev]"')
    assert "minigpt generate" in setup


def test_ci_runs_the_readme_test_command():
    test_command = BLOCKS[1].removeprefix(". .venv/bin/activate && ")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci
    assert "--nbval " in test_command and "notebooks" in test_command
    # then the notebooks again on torch's portable kernels: outputs must not depend on the CPU
    portable = [line for line in ci[ci.index(test_command):] if line.startswith("ATEN_CPU_CAPABILITY=default ")]
    assert portable and portable[0].endswith("python -m pytest --nbval --nbval-current-env "
                                             "--nbval-sanitize-with tests/nbval_sanitize.cfg notebooks")


def test_doctests_in_every_module():
    """Every public docstring example runs (the README's command does not pass --doctest-modules)."""
    import doctest
    import importlib
    import pkgutil

    import minigpt

    failed, names = 0, []
    for info in pkgutil.walk_packages(minigpt.__path__, prefix="minigpt."):  # subpackages too (exercises)
        module = importlib.import_module(info.name)
        failed += doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed
        names.append(info.name)
    assert "minigpt.exercises.checking" in names and failed == 0


def test_python_api_example_runs(capsys):
    example = re.search(r"## The Python API in five lines\n\n```python\n(.*?)\n```", README, flags=re.DOTALL)[1]
    assert len([line for line in example.splitlines() if line.strip()]) == 5
    exec(example, {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == "[6109, 3626, 6100, 345]" and printed[0].startswith("ROMEO:")


def test_exercise_example_is_a_real_checker_message():
    import torch

    from minigpt.exercises.top_k import check_top_k_filter

    def keeps_exactly_k(logits, k):  # the README's wrong answer: topk indices drop a tied token
        kept = torch.topk(logits, k).indices
        return torch.full_like(logits, float("-inf")).scatter(1, kept, logits.gather(1, kept))

    shown = re.search(r"### Exercises\n.*?```\n(.*?)\n```", README, flags=re.DOTALL)[1]
    assert shown == check_top_k_filter(keeps_exactly_k).message

"""The README is the front door: its commands, its example and its links are what a new user types and
clicks, so keep them true; and keep it short enough to be read (the rest lives in docs/)."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_LINES = 200


def test_readme_opens_with_the_two_commands():
    first_line = README.splitlines()[0]
    assert first_line == "# minigpt"
    setup, tests = BLOCKS[0], BLOCKS[1]
    assert README.index(setup) < README.index(tests) < README.index("\n## ")  # before the first section
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


def test_readme_is_a_front_door():
    """At most 200 lines; longer material goes to a page in docs/, which the README links."""
    assert len(README.splitlines()) <= MAX_LINES
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", README))
    assert linked == {p.relative_to(ROOT).as_posix() for p in PAGES[1:]}, "every page of docs/ is linked"


def slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading: lower case, punctuation dropped, spaces to hyphens.

    >>> slug("Shipped models"), slug("What `minigpt bench` measures")
    ('shipped-models', 'what-minigpt-bench-measures')
    """
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a "# comment" in a code block is no heading
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def relative_links(text: str) -> list[str]:
    """Link targets and image sources that point into the repository (not http, not mailto)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'<img[^>]*\bsrc="([^"]+)"', text)
    return [t for t in targets if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page.read_text()):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and anchor not in anchors(file)):
            broken.append(target)
    assert not broken, f"{page.name}: links to nothing: {broken}"
    assert relative_links("[a](docs/x.md) [b](https://x.org) <img src=\"f.png\">") == ["docs/x.md", "f.png"]


def api_example() -> str:
    return re.search(r"## The Python API in five lines\n\n```python\n(.*?)\n```", README, flags=re.S)[1]


def test_python_api_example_runs_and_prints_text():
    example = api_example()
    assert len([line for line in example.splitlines() if line.strip()]) == 5
    printed = []
    exec(example, {"print": lambda *args: printed.append(args[0])})
    sampled, best_beam, ids = printed
    prompt = "JULIET:\nO Romeo"
    for text in (sampled, best_beam):  # a continuation of real words, not the prompt and a run of spaces
        assert text.startswith(prompt)
        assert len(re.findall(r"[A-Za-z]{2,}", text.removeprefix(prompt))) >= 5, repr(text)
    assert ids == [6109, 3626, 6100, 345]


def test_python_api_beam_wins_every_step_by_a_margin():
    """The README's beam line prints the same text on every CPU (tests/test_notebook_margins.py's rule)."""
    import test_notebook_margins as margins

    call = next(node for node in ast.walk(ast.parse(api_example()))
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "beam_search")
    prompt = ast.literal_eval(call.args[1])
    settings = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    measured = margins.METHODS["beam"](prompt, **settings)  # [(where, margin)], one or more per step
    thin = [(where, m) for where, m in measured if not m >= margins.MIN_MARGIN]
    assert len(measured) >= settings["max_new_tokens"]
    assert not thin, f"the README's beam search of {prompt!r} is too close to call at {thin}: pick another prompt"


def test_doctests_in_every_module():
    """Every public docstring example runs (the README's command does not pass --doctest-modules)."""
    import doctest
    import importlib
    import pkgutil

    import minigpt

    failed, names = 0, []
    for info in pkgutil.walk_packages(minigpt.__path__, prefix="minigpt."):  # subpackages too (exercises)
        if info.name.endswith(".__main__"):  # `python -m minigpt.bench` runs it; importing it would too
            continue
        module = importlib.import_module(info.name)
        failed += doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed
        names.append(info.name)
    assert "minigpt.exercises.checking" in names and failed == 0


def test_exercise_example_is_a_real_checker_message():
    import torch

    from minigpt.exercises.top_k import check_top_k_filter

    def keeps_exactly_k(logits, k):  # the README's wrong answer: topk indices drop a tied token
        kept = torch.topk(logits, k).indices
        return torch.full_like(logits, float("-inf")).scatter(1, kept, logits.gather(1, kept))

    shown = re.search(r"### Exercises\n.*?```\n(.*?)\n```", README, flags=re.DOTALL)[1]
    assert shown == check_top_k_filter(keeps_exactly_k).message

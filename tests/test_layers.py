"""The house has a teaching core and two fenced wings; the imports say so, and a test reads them.

- the core (every module of ``minigpt`` outside ``fast/`` and ``bench/``, exercises included) never imports
  ``minigpt.fast`` or ``minigpt.bench``;
- ``minigpt.fast`` imports only the core;
- ``minigpt.bench`` may import both;
- the command line (``minigpt.cli``) is the front door to every room: it may import a wing, inside the
  subcommand that needs it, so that ``minigpt generate`` never loads the bench;
- no module reaches into another module's underscore names (``from x import _y`` or ``X._y``);
- ``import minigpt`` stays light: no notebook widget, no transformers, no bench, no training loop.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minigpt"
WINGS = ("minigpt.fast", "minigpt.bench")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def wing(module: str) -> str | None:
    """The wing a module belongs to ("minigpt.fast" or "minigpt.bench"), or None for the core."""
    return next((w for w in WINGS if module == w or module.startswith(w + ".")), None)


def minigpt_imports(tree: ast.Module, top_level_only: bool = False) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import of minigpt, at any depth."""
    found = []
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "minigpt"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "minigpt":
            names = [a.name for a in node.names]
            # `from minigpt import bench` imports the module minigpt.bench
            found += [(f"{node.module}.{n}", [], node.lineno) for n in names if f"{node.module}.{n}" in MODULES]
            found.append((node.module, [n for n in names if f"{node.module}.{n}" not in MODULES], node.lineno))
    return found


@pytest.mark.parametrize("module", MODULES)
def test_imports_respect_the_wings(module):
    tree = ast.parse(MODULES[module].read_text())
    mine = wing(module)
    for imported, _, line in minigpt_imports(tree, top_level_only=module == "minigpt.cli"):
        theirs = wing(imported)
        if mine is None:
            assert theirs is None, f"{module}:{line} is teaching core but imports {imported}"
        elif mine == "minigpt.fast":
            assert theirs in (None, "minigpt.fast"), f"{module}:{line}: the fast wing imports {imported}"


@pytest.mark.parametrize("module", MODULES)
def test_no_module_reaches_into_private_names(module):
    tree = ast.parse(MODULES[module].read_text())
    bound = {}  # local name -> the minigpt module or object it was imported from
    for imported, names, line in minigpt_imports(tree):
        for name in names:
            assert not (name.startswith("_") and not name.startswith("__")), (
                f"{module}:{line} imports the private name {name} from {imported}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minigpt"):
            bound.update({a.asname or a.name: node.module for a in node.names})
        elif isinstance(node, ast.Import):
            bound.update({(a.asname or a.name).split(".")[0]: a.name for a in node.names if a.name.startswith("minigpt")})
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            pytest.fail(f"{module}:{node.lineno} uses {node.value.id}.{node.attr}, a private name of "
                        f"{bound[node.value.id]}")


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


HEAVY = {"anywidget", "transformers", "minigpt.bench", "minigpt.train", "minigpt.fast", "minigpt.widget"}


def test_import_minigpt_is_light():
    assert HEAVY & loaded_after("import minigpt") == set()


def test_minigpt_explore_is_the_function_and_the_widget_loads_when_made():
    import minigpt
    from minigpt.explore import Trail  # noqa: F401  (the submodule of the same name, imported on its own)

    assert callable(minigpt.explore) and minigpt.explore.__module__ == "minigpt.explore"
    code = ("import minigpt; from minigpt.model import GPT, GPTConfig\n"
            "minigpt.explore(GPT(GPTConfig.from_preset('tiny')), 'Hello')")
    assert "anywidget" in loaded_after(code)


def test_the_generate_command_loads_only_what_it_uses():
    code = "from minigpt.cli import main; main(['generate', 'ROMEO:', '--max-new-tokens', '2', '--seed', '0'])"
    # it decodes on the fast path (minigpt.fast, which stores its formats with minigpt.quantize), nothing else heavy
    assert (HEAVY - {"minigpt.fast"} | {"minigpt.export"}) & loaded_after(code) == set()

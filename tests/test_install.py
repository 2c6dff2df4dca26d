"""A plain (not editable) install works for everything it installs, run from a directory outside the clone.

The wheel is built offline from the package's own files (``--no-build-isolation``: the dev extra brings the
setuptools it needs) and installed into a new virtual environment. That environment sees the dependencies
already installed here (torch, tiktoken, ...) through a folder of links that leaves out every ``minigpt``, so
what runs is the wheel's copy and nothing of the checkout. Then a user's first commands: ``--version``,
``python -m minigpt``, ``generate``, ``train --max-steps 2``, ``bench`` on its quickest setting, ``export``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import minigpt
from minigpt.checkpoint import load_model
from minigpt.cli import main
from minigpt.data import list_works

REPO = Path(__file__).resolve().parent.parent
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "minigpt")


def _run(args: list, cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    """Run a command; its stdout, or a failure that shows what it printed."""
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the package's files (a build writes build/ and *.egg-info beside them)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info"))
        else:
            shutil.copy2(path, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", root / "dist",
          source], cwd=root, env=dict(os.environ))
    (built,) = (root / "dist").glob("minigpt-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """(the new environment's scripts folder, the environment variables to run it with, a work directory)."""
    root = tmp_path_factory.mktemp("install")
    env_dir = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", env_dir], check=True)
    python = env_dir / ("Scripts" if os.name == "nt" else "bin") / "python"
    paths = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib')); "
                            "print(sysconfig.get_path('scripts'))"], capture_output=True, text=True, check=True)
    site_packages, scripts = map(Path, paths.stdout.split())
    # the dependencies installed here, minus any minigpt (an editable install's finder, its dist-info)
    deps = root / "deps"
    deps.mkdir()
    for folder in dict.fromkeys((sysconfig.get_path("purelib"), sysconfig.get_path("platlib"))):
        for entry in Path(folder).iterdir():
            if "minigpt" not in entry.name.lower() and not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    (site_packages / "dependencies.pth").write_text(f"{deps}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{scripts}{os.pathsep}{env.get('PATH', '')}"
    env["MINIGPT_CACHE"] = str(root / "cache")  # a user's first run: no token cache yet
    env["MPLBACKEND"] = "Agg"
    # pip from here, run by the new interpreter: it installs into the new environment
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--ignore-installed", wheel],
         cwd=root, env=env)
    work = root / "elsewhere"  # not the clone, so nothing is imported from it
    work.mkdir()
    return scripts, env, work


def _metadata(wheel: Path) -> dict[str, list[str]]:
    """The wheel's METADATA headers: each field's values, in order."""
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"minigpt-{minigpt.__version__}.dist-info/METADATA").decode()
    fields: dict[str, list[str]] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        name, _, value = line.partition(": ")
        fields.setdefault(name, []).append(value)
    return fields


def test_the_wheel_holds_the_package_data_and_the_licences(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    corpus = {n for n in names if n.startswith("minigpt/corpus/")}
    assert corpus == {f"minigpt/corpus/{work}.txt" for work in list_works()}
    assert {"minigpt/py.typed", "minigpt/__main__.py", "minigpt/assets/gpt2.tiktoken"} <= names
    assert {"minigpt/models/shakespeare/model.safetensors", "minigpt/models/shakespeare/config.json"} <= names
    dist_info = f"minigpt-{minigpt.__version__}.dist-info"
    assert {f"{dist_info}/licenses/LICENSE", f"{dist_info}/licenses/minigpt/assets/gpt2.tiktoken.LICENSE"} <= names
    assert "Intended Audience :: Education" in _metadata(wheel)["Classifier"]


def test_the_installed_copy_runs_from_elsewhere(installed):
    scripts, env, work = installed
    where = _run(["python", "-c", "import minigpt; print(minigpt.__file__)"], work, env).strip()
    assert REPO not in Path(where).parents, where
    assert _run(["minigpt", "--version"], work, env) == f"minigpt {minigpt.__version__}\n"
    assert _run(["python", "-m", "minigpt", "--version"], work, env) == f"minigpt {minigpt.__version__}\n"


def test_generate_from_the_wheel_equals_the_library(installed):
    scripts, env, work = installed
    printed = _run(["minigpt", "generate", "ROMEO:", "--temperature", "0", "--max-new-tokens", "8"], work, env)
    expected = minigpt.generate(load_model("shakespeare"), "ROMEO:", max_new_tokens=8, temperature=0).text
    assert printed == expected + "\n"


def test_train_from_the_wheel_reads_the_shipped_corpus(installed):
    scripts, env, work = installed
    printed = _run(["minigpt", "train", "--max-steps", "2", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
                    "--block-size", "32", "--batch-size", "2", "--eval-windows", "4", "--no-progress",
                    "--out-dir", "run", "--figure-path", "run/loss.png"], work, env)
    assert "final held-out loss:" in printed
    assert {"config.json", "model.safetensors"} <= {p.name for p in (work / "run").iterdir()}
    assert list(Path(env["MINIGPT_CACHE"]).glob("shakespeare-*.pt"))  # the token cache, outside the package


def test_bench_from_the_wheel(installed):
    scripts, env, work = installed
    printed = _run(["minigpt", "bench", "--preset", "tiny", "--models", "random", "--batch-sizes", "1",
                    "--new-tokens", "2", "--repeats", "1", "--methods", "cache", "--dtypes", "fp32", "--no-progress",
                    "--out-json", "bench.json", "--figure", "bench.png"], work, env)
    title, header = printed.splitlines()[:2]  # one table per model, under its title
    assert title.startswith("decode on random") and header.split()[:3] == ["method", "dtype", "batch"]
    assert (work / "bench.json").is_file() and (work / "bench.png").is_file()


def test_export_from_the_wheel(installed):
    scripts, env, work = installed
    _run(["minigpt", "export", "shakespeare", "--to", "hf", "hf"], work, env)
    _run(["minigpt", "export", "shakespeare", "--to", "gguf", "shakespeare.gguf"], work, env)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (work / "hf").iterdir()}
    assert (work / "shakespeare.gguf").read_bytes()[:4] == b"GGUF"


# --- the conventions, in the checkout ---------------------------------------------------------------------

def test_the_version_has_one_source(wheel, capsys):
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject and 'version = { attr = "minigpt.__version__" }' in pyproject
    assert _metadata(wheel)["Version"] == [minigpt.__version__]
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"minigpt {minigpt.__version__}\n"


def test_python_m_minigpt_is_the_minigpt_command():
    script = Path(sysconfig.get_path("scripts")) / "minigpt"
    env = {**os.environ, "COLUMNS": "100"}
    assert _run([sys.executable, "-m", "minigpt", "--help"], REPO, env) == _run([script, "--help"], REPO, env)


def test_the_licence_file_matches_the_declared_licence(wheel):
    licence = (REPO / "LICENSE").read_text(encoding="utf-8")
    metadata = _metadata(wheel)
    assert metadata["License-Expression"] == ["MIT"] and licence.startswith("MIT License\n")
    assert metadata["License-File"] == ["LICENSE", "minigpt/assets/gpt2.tiktoken.LICENSE"]
    for shipped in ("minigpt/assets/gpt2.tiktoken", "minigpt/corpus/", "minigpt/models/"):  # each has its note
        assert shipped in licence and (REPO / shipped).exists()
    assert "Creative Commons Attribution 2.5" in " ".join(licence.split())  # the corpus collection's licence asks for credit

"""Saving and loading weights: minigpt checkpoints, and GPT-2 weights in Hugging Face format.

A minigpt checkpoint is a directory with two files: ``model.safetensors`` (the tensors) and
``config.json`` (the ``GPTConfig`` fields plus ``"format": "minigpt"``). A Hugging Face GPT-2 directory
looks alike (``model.safetensors`` + ``config.json`` with ``"model_type": "gpt2"``), so ``load_model``
tells them apart by the config and accepts both.

>>> import tempfile
>>> model = GPT(GPTConfig.from_preset("tiny"))
>>> path = save_checkpoint(model, tempfile.mkdtemp())
>>> torch.equal(load_model(path).lm_head.weight, model.lm_head.weight)
True
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import warnings
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from minigpt.checks import check_device, check_type
from minigpt.model import GPT, GPTConfig

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "minigpt"
# OpenAI's GPT-2 used a `Conv1D` layer that stores weights as (in, out); nn.Linear stores (out, in)
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# a minigpt config.json must name these (they decide the tensor shapes); the other fields have defaults
REQUIRED_KEYS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
# keys that describe the run, not the model, so loading skips them: the training loop's step, and the held-out
# loss measured on the weights (the shipped models record theirs; an export's model card quotes it)
IGNORED_KEYS = ("training_step", "heldout_loss")
# GPTConfig field → the name of the same setting in a Hugging Face GPT-2 config.json
HF_KEYS = {"vocab_size": "vocab_size", "block_size": "n_positions", "n_layer": "n_layer", "n_head": "n_head",
           "n_embd": "n_embd"}
HUB_REPOS = {name: f"openai-community/{name}" for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")}
# the trained models inside the package, one folder each (a config.json and a model.safetensors)
SHIPPED_DIR = resources.files("minigpt") / "models"
# what os.stat says a path is, for the files that are not regular: none of them is read as a checkpoint
_NOT_REGULAR = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def save_checkpoint(model: GPT, path: str | Path, *, dtype: torch.dtype | None = None) -> Path:
    """Write ``model`` to the directory ``path`` (created if needed) and return the path.

    The tied output head is not stored: it is the token embedding. ``dtype`` (e.g. ``torch.float16``)
    stores the tensors at lower precision to halve the file; loading always gives an fp32 model.

    >>> import tempfile
    >>> (save_checkpoint(GPT(GPTConfig.from_preset("tiny")), tempfile.mkdtemp()) / "config.json").exists()
    True
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.to(dtype or v.dtype).contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"
    }
    save_file(tensors, path / WEIGHTS_NAME, metadata={"format": FORMAT})
    config = {"format": FORMAT, **model.config.to_dict()}
    (path / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return path


def load_model(name_or_path: str | Path, *, device: str | torch.device = "cpu") -> GPT:
    """Load a model by name or path, in eval mode, on ``device`` (checked first: ``check_device``).

    ``name_or_path`` is, in this order: a model shipped with minigpt (``shipped_models()``), a minigpt
    checkpoint or Hugging Face GPT-2 weights (a directory or a ``model.safetensors``), or a GPT-2 name
    (``"gpt2"``, ``"gpt2-medium"``, …) to download with ``from_pretrained``.

    A shipped name wins over a directory of the same name in the current directory, so that
    ``load_model("shakespeare")`` means the same model wherever it runs; if that directory holds a
    checkpoint, a warning says so. To load the directory instead, pass a path that is not a bare name:
    ``"./shakespeare"`` or ``Path("shakespeare")`` (a ``Path`` is always a path). GPT-2 names go the
    other way, as in transformers: a local ``./gpt2`` (a downloaded copy) wins over the download.

    >>> import tempfile
    >>> load_model(save_checkpoint(GPT(GPTConfig.from_preset("tiny")), tempfile.mkdtemp())).config.n_layer
    2
    """
    check_type("name_or_path", name_or_path, (str, os.PathLike), "a model name or a path (a str or a pathlib.Path)")
    device = check_device("device", device)
    if isinstance(name_or_path, str) and name_or_path in shipped_models():
        _warn_if_shadowed(name_or_path)
        return load_checkpoint(SHIPPED_DIR / name_or_path, device=device)
    name = str(name_or_path)
    if not Path(name).exists() and name in HUB_REPOS:
        return from_pretrained(name, device=device)
    return load_checkpoint(name_or_path, device=device)


def _warn_if_shadowed(name: str) -> None:
    """Warn when the shipped model ``name`` is loaded although ``./name`` holds a checkpoint too."""
    local = Path(name)
    if local.is_file() or (local / WEIGHTS_NAME).is_file():
        warnings.warn(
            f"loaded minigpt's shipped model {name!r}, not the checkpoint at {local.resolve()}; "
            f"to load that one, pass './{name}' or Path({name!r})",
            stacklevel=3,
        )


def shipped_models() -> list[str]:
    """Names of the trained models inside the package.

    >>> isinstance(shipped_models(), list)
    True
    """
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / WEIGHTS_NAME).is_file()) if SHIPPED_DIR.is_dir() else []


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> GPT:
    """Load a minigpt checkpoint or Hugging Face GPT-2 weights (a directory or a ``model.safetensors``).

    Which one it is, the ``config.json`` beside the weights says (``"format": "minigpt"`` or
    ``"model_type": "gpt2"``). Without a config.json, Hugging Face weights are still read (their shape is
    inferred from the tensors), but a minigpt checkpoint is refused: its header says ``"format":
    "minigpt"``, and its head count cannot be inferred. Every problem with the config names the file.

    >>> import tempfile
    >>> load_checkpoint(save_checkpoint(GPT(GPTConfig.from_preset("tiny")), tempfile.mkdtemp())).config.n_head
    4
    """
    check_type("path", path, (str, os.PathLike), "a checkpoint path (a str or a pathlib.Path)")
    device = check_device("device", device)
    weights, config_path = _locate(Path(path))
    config = _read_config(config_path, weights)
    if config is not None and config.get("format") == FORMAT:
        model_config = _minigpt_config(config, config_path)
        tensors = _read_safetensors(weights)
    else:
        tensors = hf_to_minigpt(_read_safetensors(weights))
        model_config = _hf_config(config, tensors, config_path)
    model = GPT(model_config)
    _load_tensors(model, tensors, weights)
    return model.to(device).eval()


def _locate(path: Path) -> tuple[Path, Path]:
    """(weights file, config file) for a checkpoint directory or a weights file."""
    weights = path / WEIGHTS_NAME if path.is_dir() else path
    if not weights.exists():
        raise FileNotFoundError(
            f"no checkpoint at {weights}: expected a directory holding {WEIGHTS_NAME} and {CONFIG_NAME}, "
            f"or a {WEIGHTS_NAME} file"
        )
    check_regular_file(weights)
    return weights, weights.parent / CONFIG_NAME


def check_regular_file(path: Path) -> None:
    """Raise a ``ValueError`` unless ``path`` is a regular file (or a link to one), before anything opens it.

    Opening a FIFO for reading blocks until some other process writes to it, forever if none does, and a
    device (``/dev/zero``) reads without end; a directory cannot be read at all. ``os.stat`` tells them
    apart without opening the path.

    >>> check_regular_file(Path("/dev/null"))
    Traceback (most recent call last):
        ...
    ValueError: /dev/null is a character device, not a regular file: a checkpoint is read only from regular files
    """
    mode = path.stat().st_mode
    for is_kind, kind in _NOT_REGULAR:
        if is_kind(mode):
            raise ValueError(f"{path} is {kind}, not a regular file: a checkpoint is read only from regular files")


def _read_config(config_path: Path, weights: Path) -> dict | None:
    """The parsed config.json, or None where there is none and the weights are not minigpt's."""
    if not config_path.exists():
        if _read_metadata(weights).get("format") == FORMAT:
            raise FileNotFoundError(
                f"{config_path} is missing: {weights} is a minigpt checkpoint (its header says "
                f"\"format\": \"{FORMAT}\") and needs the {CONFIG_NAME} that save_checkpoint wrote beside it"
            )
        return None  # Hugging Face weights alone: the shape is read from the tensors
    check_regular_file(config_path)
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{config_path} is not valid JSON ({e}); expected the JSON object save_checkpoint writes"
        ) from e
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} must hold a JSON object, got a JSON {type(config).__name__}")
    return config


def _minigpt_config(config: dict, config_path: Path) -> GPTConfig:
    """GPTConfig from a minigpt config.json, with an error naming the file and the wrong keys."""
    fields = [f.name for f in dataclasses.fields(GPTConfig)]
    unknown = sorted(config.keys() - {"format", *fields, *IGNORED_KEYS})
    missing = [k for k in REQUIRED_KEYS if k not in config]
    problems = ([f"unknown keys {unknown}"] if unknown else []) + ([f"missing keys {missing}"] if missing else [])
    if problems:
        raise ValueError(
            f"{config_path} is not a valid minigpt config: {' and '.join(problems)}; it holds \"format\", "
            f"the GPTConfig fields ({', '.join(fields)}; required: {', '.join(REQUIRED_KEYS)}), "
            f"and optionally {', '.join(IGNORED_KEYS)}"
        )
    try:
        return GPTConfig(**{k: v for k, v in config.items() if k in fields})
    except (ValueError, TypeError) as e:
        raise ValueError(f"{config_path}: {e}") from e


def _read_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors header (save_checkpoint writes ``{"format": "minigpt"}``)."""
    try:
        with safe_open(path, framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:  # truncated, corrupt, or not safetensors at all
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e


def hf_to_minigpt(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename and transpose Hugging Face GPT-2 tensors into minigpt's layout.

    >>> hf_to_minigpt({"h.0.attn.c_attn.weight": torch.zeros(4, 12)})["transformer.h.0.attn.c_attn.weight"].shape
    torch.Size([12, 4])
    """
    out = {}
    for name, tensor in tensors.items():
        name = name.removeprefix("transformer.")
        # the causal-mask buffers of older checkpoints and the tied head carry no weights of their own
        if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue
        out["transformer." + name] = tensor.t() if name.endswith(CONV1D_SUFFIXES) else tensor
    return out


def _hf_config(config: dict | None, tensors: dict[str, torch.Tensor], config_path: Path) -> GPTConfig:
    """GPTConfig from a Hugging Face config.json, or from tensor shapes when there is none."""
    if config is not None:
        if config.get("model_type") != "gpt2":
            raise ValueError(
                f"{config_path} is neither a minigpt config (\"format\": \"minigpt\") nor a GPT-2 config "
                f"(\"model_type\": \"gpt2\"); got model_type={config.get('model_type')!r}"
            )
        missing = [k for k in HF_KEYS.values() if k not in config]
        if missing:
            raise ValueError(f"{config_path} is not a valid GPT-2 config: missing keys {missing}")
        try:
            return GPTConfig(**{ours: config[theirs] for ours, theirs in HF_KEYS.items()})
        except ValueError as e:
            raise ValueError(f"{config_path}: {e}") from e
    # no config.json: read the shape from the tensors; GPT-2 models all use 64-wide heads
    if not {"transformer.wte.weight", "transformer.wpe.weight"} <= tensors.keys():
        raise ValueError(
            f"{config_path.parent / WEIGHTS_NAME} has no {CONFIG_NAME} beside it and does not hold GPT-2 "
            f"weights (no wte.weight and wpe.weight tensors)"
        )
    vocab_size, n_embd = tensors["transformer.wte.weight"].shape
    n_layer = len({k.split(".")[2] for k in tensors if k.startswith("transformer.h.")})
    block_size = tensors["transformer.wpe.weight"].shape[0]
    return GPTConfig(vocab_size, block_size, n_layer, n_embd // 64, n_embd)


def _load_tensors(model: GPT, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Copy tensors into the model, with an error naming the file and the first mismatch."""
    expected = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    missing = sorted(expected.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(
                f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                f"the config expects {tuple(expected[name].shape)}"
            )
    model.load_state_dict(tensors, strict=False)  # strict=False only because the tied head is absent


def from_pretrained(name: str, *, device: str | torch.device = "cpu") -> GPT:
    """Download OpenAI's GPT-2 weights from the Hugging Face hub (needs the ``hub`` extra and a network).

    >>> from_pretrained("gpt2").num_parameters()  # doctest: +SKIP
    124439808
    """
    if name not in HUB_REPOS:
        raise ValueError(f"name must be one of {sorted(HUB_REPOS)}, got {name!r}")
    device = check_device("device", device)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise ImportError(
            f"downloading {name!r} needs huggingface-hub: pip install 'minigpt[hub]'; or download "
            f"{HUB_REPOS[name]} elsewhere and pass its directory instead"
        ) from e
    try:
        weights = hf_hub_download(HUB_REPOS[name], WEIGHTS_NAME)
        hf_hub_download(HUB_REPOS[name], CONFIG_NAME)
    except Exception as e:  # huggingface-hub raises several types for offline, firewall, missing file
        raise ConnectionError(
            f"could not download {name!r} from the Hugging Face hub ({type(e).__name__}); are you "
            f"offline? Download {HUB_REPOS[name]} on a machine with internet and pass its directory"
        ) from e
    return load_checkpoint(weights, device=device)


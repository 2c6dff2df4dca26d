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

import json
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from minigpt.model import GPT, GPTConfig

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "minigpt"
# OpenAI's GPT-2 used a `Conv1D` layer that stores weights as (in, out); nn.Linear stores (out, in)
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
HUB_REPOS = {name: f"openai-community/{name}" for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")}


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
    """Load a model by name or path, in eval mode.

    ``name_or_path`` is, in this order: a model shipped with minigpt (``shipped_models()``), a minigpt
    checkpoint or Hugging Face GPT-2 weights (a directory or a ``model.safetensors``), or a GPT-2 name
    (``"gpt2"``, ``"gpt2-medium"``, …) to download with ``from_pretrained``.

    >>> import tempfile
    >>> load_model(save_checkpoint(GPT(GPTConfig.from_preset("tiny")), tempfile.mkdtemp())).config.n_layer
    2
    """
    name = str(name_or_path)
    if name in shipped_models():
        return load_checkpoint(resources.files("minigpt") / "models" / name, device=device)
    if not Path(name).exists() and name in HUB_REPOS:
        return from_pretrained(name, device=device)
    return load_checkpoint(name_or_path, device=device)


def shipped_models() -> list[str]:
    """Names of the trained models inside the package.

    >>> isinstance(shipped_models(), list)
    True
    """
    models = resources.files("minigpt") / "models"
    return sorted(p.name for p in models.iterdir() if (p / WEIGHTS_NAME).is_file()) if models.is_dir() else []


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> GPT:
    """Load a minigpt checkpoint or Hugging Face GPT-2 weights (a directory or a ``model.safetensors``).

    >>> import tempfile
    >>> load_checkpoint(save_checkpoint(GPT(GPTConfig.from_preset("tiny")), tempfile.mkdtemp())).config.n_head
    4
    """
    weights, config_path = _locate(Path(path))
    config = json.loads(config_path.read_text()) if config_path.exists() else None
    tensors = _read_safetensors(weights)
    if config is not None and config.get("format") == FORMAT:
        config.pop("format")
        model_config = GPTConfig(**config)
    else:
        tensors = hf_to_minigpt(tensors)
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
    return weights, weights.parent / CONFIG_NAME


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
        return GPTConfig(
            vocab_size=config["vocab_size"],
            block_size=config["n_positions"],
            n_layer=config["n_layer"],
            n_head=config["n_head"],
            n_embd=config["n_embd"],
        )
    # no config.json: read the shape from the tensors; GPT-2 models all use 64-wide heads
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


import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from minigpt import checkpoint
from minigpt.checkpoint import from_pretrained, load_checkpoint, load_model, save_checkpoint
from minigpt.model import GPT, GPTConfig

PROMPTS = torch.tensor([[6109, 3626, 6100, 345, 13, 198], [50256, 50256, 15496, 11, 466, 345]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])


def test_round_trip_is_exact(tiny_model, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((path / "config.json").read_text())["format"] == "minigpt"
    loaded = load_model(path)
    assert loaded.config == tiny_model.config
    for (name, a), b in zip(tiny_model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_hf_weights_give_the_same_logits(hf_model, minigpt_model):
    positions = (MASK.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = hf_model(PROMPTS, attention_mask=MASK, position_ids=positions).logits
        ours = minigpt_model(PROMPTS, attention_mask=MASK, position_ids=positions)
    real = MASK.bool()  # padding positions carry no meaning in either model
    assert (ours - ref)[real].abs().max() <= 1e-5
    assert minigpt_model.num_parameters() == sum(p.numel() for p in hf_model.parameters())


def test_bare_hf_safetensors_file_infers_the_shape(hf_gpt2_dir, tmp_path, minigpt_model):
    lone = tmp_path / "model.safetensors"
    lone.write_bytes((hf_gpt2_dir / "model.safetensors").read_bytes())
    model = load_model(lone)
    assert model.config == minigpt_model.config
    assert torch.equal(model(PROMPTS), minigpt_model(PROMPTS))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no checkpoint at {tmp_path}/model.safetensors"):
        load_checkpoint(tmp_path)


def test_truncated_file(tiny_model, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model.safetensors is not a readable safetensors file \(truncated"):
        load_checkpoint(path)


def test_shape_mismatch_names_the_tensor(tiny_model, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "block_size": 64}))
    with pytest.raises(ValueError, match=r"tensor 'transformer.wpe.weight' has shape \(128, 64\), the config expects \(64, 64\)"):
        load_checkpoint(path)


def test_missing_tensors_are_named(tiny_model, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
    with pytest.raises(ValueError, match=r"does not match the model: missing \['transformer.h.2.attn.c_attn.bias'"):
        load_checkpoint(path)


def test_foreign_config(tiny_model, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="neither a minigpt config .* nor a GPT-2 config .*got model_type='llama'"):
        load_checkpoint(path)


def test_from_pretrained_downloads_through_the_hub(hf_gpt2_dir, minigpt_model, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    calls = []

    def fake_download(repo_id, filename):
        calls.append((repo_id, filename))
        return str(hf_gpt2_dir / filename)

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    model = from_pretrained("gpt2")
    assert calls == [("openai-community/gpt2", "model.safetensors"), ("openai-community/gpt2", "config.json")]
    assert torch.equal(model(PROMPTS), minigpt_model(PROMPTS))


def test_from_pretrained_offline_says_what_to_do(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConnectionError, match="could not download 'gpt2' from the Hugging Face hub .* are you offline"):
        from_pretrained("gpt2")


def test_from_pretrained_without_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import now fails as if not installed
    with pytest.raises(ImportError, match=r"needs huggingface-hub: pip install 'minigpt\[hub\]'"):
        from_pretrained("gpt2")


def test_from_pretrained_unknown_name():
    with pytest.raises(ValueError, match=r"name must be one of \['gpt2', 'gpt2-large', 'gpt2-medium', 'gpt2-xl'\], got 'gpt5'"):
        from_pretrained("gpt5")


def test_load_model_routes_gpt2_names_to_the_hub(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no directory called gpt2 here
    seen = []
    monkeypatch.setattr(checkpoint, "from_pretrained", lambda name, device: seen.append(name) or GPT(GPTConfig.from_preset("tiny")))
    load_model("gpt2")
    assert seen == ["gpt2"]


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as one without CUDA or MPS, whatever it really has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize(
    "device, error, message",
    [
        ("foo", ValueError, r"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got 'foo'"),
        ("meta", ValueError, r"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got 'meta'"),
        (0, TypeError, r"device must be a str or torch.device: 'cpu', 'cuda', 'cuda:N' or 'mps', got 0"),
        ("cuda", ValueError, r"device must be a device this machine has \(available: cpu; CUDA is not available\), got 'cuda'"),
        (torch.device("cuda:1"), ValueError,
         r"device must be a device this machine has \(available: cpu; CUDA is not available\), got device\(type='cuda', index=1\)"),
        ("mps", ValueError, r"device must be a device this machine has \(available: cpu; MPS is not available\), got 'mps'"),
    ],
)
def test_bad_device_fails_before_reading_anything(no_gpu, tmp_path, device, error, message):
    with pytest.raises(error, match=message):
        load_model(tmp_path / "not-there", device=device)  # the device error, not "no checkpoint at"


def test_missing_cuda_index_lists_the_devices(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device must be a device this machine has \(available: cpu, cuda, cuda:0; no cuda:2 on this machine\), got 'cuda:2'"):
        load_model(save_checkpoint(tiny_model, tmp_path), device="cuda:2")


def write_config(path, change):
    """Rewrite the checkpoint's config.json through `change` (a dict → dict function)."""
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(change(config)))
    return path / "config.json"


def test_config_that_is_not_json_is_named(tiny_model, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path)
    (path / "config.json").write_text('{"format": "minigpt",')
    with pytest.raises(ValueError, match=f"{re.escape(str(tmp_path))}/config.json is not valid JSON \\(Expecting property name enclosed "
                                         f"in double quotes: line 1 column 22 \\(char 21\\)\\); expected the JSON object"):
        load_checkpoint(path)
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=f"{re.escape(str(tmp_path))}/config.json must hold a JSON object, got a JSON list"):
        load_checkpoint(path)


def test_config_with_unknown_or_missing_keys_is_named(tiny_model, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path)
    config = write_config(path, lambda c: {**c, "learning_rate": 1e-3})
    with pytest.raises(ValueError, match=rf"{re.escape(str(config))} is not a valid minigpt config: unknown keys \['learning_rate'\]; "
                                         r"it holds \"format\", the GPTConfig fields \(vocab_size, block_size, n_layer, "
                                         r"n_head, n_embd, dropout, use_sdpa; required: vocab_size, block_size, n_layer, "
                                         r"n_head, n_embd\), and optionally training_step"):
        load_checkpoint(path)
    write_config(path, lambda c: {k: v for k, v in c.items() if k not in ("n_layer", "n_head", "learning_rate")})
    with pytest.raises(ValueError, match=rf"{re.escape(str(config))} is not a valid minigpt config: missing keys \['n_layer', 'n_head'\];"):
        load_checkpoint(path)
    write_config(path, lambda c: {**c, "n_layer": 2, "n_head": 3})
    with pytest.raises(ValueError, match=rf"{re.escape(str(config))}: n_embd must be divisible by n_head, got n_embd=64 and n_head=3"):
        load_checkpoint(path)


def test_training_step_in_the_config_is_ignored(tiny_model, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path)
    write_config(path, lambda c: {**c, "training_step": 1200})
    assert load_checkpoint(path).config == tiny_model.config


def test_minigpt_checkpoint_without_its_config_is_named(tiny_model, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path)
    (path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(tmp_path))}/config.json is missing: {re.escape(str(tmp_path))}/model.safetensors is a "
                                                r"minigpt checkpoint \(its header says \"format\": \"minigpt\"\) and "
                                                r"needs the config.json that save_checkpoint wrote beside it"):
        load_model(path / "model.safetensors")


def test_gpt2_config_with_missing_keys_is_named(hf_gpt2_dir, tmp_path):
    (tmp_path / "model.safetensors").write_bytes((hf_gpt2_dir / "model.safetensors").read_bytes())
    config = json.loads((hf_gpt2_dir / "config.json").read_text())
    del config["n_positions"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path))}/config.json is not a valid GPT-2 config: missing keys \['n_positions'\]"):
        load_checkpoint(tmp_path)


def test_foreign_safetensors_without_config(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path))}/model.safetensors has no config.json beside it and does not "
                                         r"hold GPT-2 weights"):
        load_checkpoint(tmp_path)


@pytest.fixture
def local_shakespeare(tiny_model, tmp_path, monkeypatch):
    """A checkpoint in ./shakespeare, named like the shipped model."""
    if "shakespeare" not in checkpoint.shipped_models():
        pytest.skip("the shipped model is not installed")
    monkeypatch.chdir(tmp_path)
    return save_checkpoint(tiny_model, tmp_path / "shakespeare")


def test_shipped_name_wins_over_a_local_directory_with_a_warning(local_shakespeare, tiny_model):
    with pytest.warns(UserWarning, match=rf"loaded minigpt's shipped model 'shakespeare', not the checkpoint at "
                                         rf"{re.escape(str(local_shakespeare.resolve()))}; to load that one, pass './shakespeare' or "
                                         r"Path\('shakespeare'\)"):
        shipped = load_model("shakespeare")
    assert shipped.config != tiny_model.config
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_model("./shakespeare").config == tiny_model.config
        assert load_model(Path("shakespeare")).config == tiny_model.config


def test_a_local_directory_that_is_no_checkpoint_is_not_warned_about(tmp_path, monkeypatch):
    if "shakespeare" not in checkpoint.shipped_models():
        pytest.skip("the shipped model is not installed")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shakespeare").mkdir()  # e.g. the corpus' texts
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model("shakespeare")


# ---- what load_model accepts: names and paths of regular files only (issue 29) ----


@pytest.mark.parametrize("bad", [None, 5, b"ckpt"])
def test_load_model_refuses_what_is_neither_a_name_nor_a_path(bad):
    message = rf"^name_or_path must be a model name or a path \(a str or a pathlib.Path\), got {re.escape(repr(bad))}"
    with pytest.raises(TypeError, match=message):
        load_model(bad)
    with pytest.raises(TypeError, match=r"^path must be a checkpoint path \(a str or a pathlib.Path\), got "):
        load_checkpoint(bad)


def _load_in_a_child(*paths):
    """The error each load_model(path) ends in, from a child process with a 60 s guard (a hang fails the test).

    A child, not a thread: opening a FIFO blocks inside safetensors with the GIL held, so a thread with a
    timeout could not even notice (nor could SIGALRM).
    """
    code = ("import sys\nfrom minigpt.checkpoint import load_model\nfor path in sys.argv[1:]:\n"
            "    try:\n        load_model(path)\n        print('loaded', path)\n"
            "    except Exception as e:\n        print(type(e).__name__, e, sep=': ')\n")
    try:
        run = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True,
                             timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"load_model hung on one of {paths}")
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


def test_fifos_are_refused_before_they_are_opened(tiny_model, tmp_path):
    import os

    fifo = tmp_path / "x.safetensors"
    os.mkfifo(fifo)
    path = save_checkpoint(tiny_model, tmp_path / "ckpt")  # good weights, and a FIFO for their config.json
    (path / "config.json").unlink()
    os.mkfifo(path / "config.json")
    assert _load_in_a_child(fifo, path) == [
        f"ValueError: {fifo} is a FIFO (named pipe), not a regular file: a checkpoint is read only from regular files",
        f"ValueError: {path / 'config.json'} is a FIFO (named pipe), not a regular file: a checkpoint is read only "
        "from regular files",
    ]


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="needs /dev/null")
def test_a_device_is_refused():
    with pytest.raises(ValueError, match=r"^/dev/null is a character device, not a regular file: a checkpoint is read"):
        load_model("/dev/null")


def test_a_directory_where_the_weights_file_belongs_is_refused(tmp_path):
    (tmp_path / "ckpt" / "model.safetensors").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"model.safetensors is a directory, not a regular file"):
        load_model(tmp_path / "ckpt")

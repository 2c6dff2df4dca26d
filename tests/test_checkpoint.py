import json
import sys

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

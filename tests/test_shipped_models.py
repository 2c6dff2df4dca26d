"""The trained models that ship inside the package."""

import json
from importlib import resources

import pytest

import minigpt
from minigpt.checkpoint import load_checkpoint, shipped_models
from minigpt.data import heldout_windows, load_splits
from minigpt.train import heldout_loss

# on 12 held-out windows spread evenly over the three works (harder than average: over all 474 windows
# the losses are 4.146 and 4.687, data/README.md)
SLICE_LOSS = {"shakespeare": 4.3791, "shakespeare-draft": 4.9700}
SLICE_BAR = {"shakespeare": 4.45, "shakespeare-draft": 5.05}


def test_both_models_ship():
    assert shipped_models() == ["shakespeare", "shakespeare-draft"]


@pytest.mark.parametrize("name, max_bytes, n_params", [("shakespeare", 25e6, 12_368_064),
                                                       ("shakespeare-draft", 4e6, 1_641_888)])
def test_loads_by_name_and_fits_its_size_budget(name, max_bytes, n_params):
    model = minigpt.load_model(name)
    assert model.num_parameters() == n_params and not model.training
    folder = resources.files("minigpt") / "models" / name
    assert sum(p.stat().st_size for p in folder.iterdir()) <= max_bytes
    assert json.loads((folder / "config.json").read_text())["vocab_size"] == 50257


@pytest.mark.parametrize("name", ["shakespeare", "shakespeare-draft"])
def test_heldout_loss_on_a_fixed_slice(name):
    """12 held-out windows: a fast stand-in for the full held-out loss."""
    model = minigpt.load_model(name)
    _, heldout = load_splits()
    loss = heldout_loss(model, heldout, model.config.block_size, max_windows=12)
    x, _ = heldout_windows(heldout, model.config.block_size)
    assert x.shape[0] == 474
    assert loss == pytest.approx(SLICE_LOSS[name], abs=1e-3)  # the shipped weights, unchanged
    assert loss < SLICE_BAR[name]  # an untrained model scores about 10.8


def test_default_model_writes_shakespeare_like_text():
    text = minigpt.generate(minigpt.load_model("shakespeare"), "ROMEO:", max_new_tokens=40,
                            do_sample=True, top_k=50, seed=0).text
    assert text.startswith("ROMEO:") and "\n" in text


def test_corrupt_shipped_file_is_refused(tmp_path):
    source = resources.files("minigpt") / "models" / "shakespeare"
    (tmp_path / "config.json").write_text((source / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path)

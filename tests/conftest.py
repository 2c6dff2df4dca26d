"""Shared fixtures: small random models, in minigpt's and in Hugging Face's format."""

import pytest
import torch

from minigpt.checkpoint import load_model
from minigpt.model import GPT, GPTConfig


@pytest.fixture(scope="session")
def hf_gpt2_dir(tmp_path_factory):
    """A small random transformers GPT2LMHeadModel saved with save_pretrained: the oracle's weights."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=50257, n_positions=128, n_embd=128, n_layer=2, n_head=2,  # 64-wide heads, as in GPT-2
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    hf = transformers.GPT2LMHeadModel(config).eval()
    # GPT-2's init (std 0.02) gives near-uniform logits and one token repeated forever; larger random
    # weights give varied, peaked distributions, so decoding choices (and their bugs) show
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.normal_(1.0, 0.1) if ".ln_" in name or "ln_f" in name else p.normal_(0.0, 0.15)
    path = tmp_path_factory.mktemp("hf_gpt2")
    hf.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def hf_model(hf_gpt2_dir):
    """The Hugging Face model behind `hf_gpt2_dir`, in eval mode."""
    import transformers

    return transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2_dir).eval()


@pytest.fixture(scope="session")
def minigpt_model(hf_gpt2_dir):
    """The same weights as `hf_model`, loaded into minigpt."""
    return load_model(hf_gpt2_dir)


@pytest.fixture
def tiny_model():
    """A randomly initialised minigpt of the `tiny` preset, seeded."""
    torch.manual_seed(0)
    return GPT(GPTConfig.from_preset("tiny")).eval()


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The test models are tiny: a second thread only adds synchronisation cost on a 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

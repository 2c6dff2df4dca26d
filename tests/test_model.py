import pytest
import torch

from minigpt.kv_cache import KVCache
from minigpt.model import GPT, PRESETS, GPTConfig


def test_gpt2_has_124m_parameters():
    with torch.device("meta"):  # shapes only: no memory, no time
        model = GPT(GPTConfig.from_preset("gpt2"))
    assert model.num_parameters() == 124_439_808
    assert model.lm_head.weight is model.transformer.wte.weight


@pytest.mark.parametrize(
    "name, shape",
    [("gpt2", (12, 12, 768)), ("gpt2-medium", (24, 16, 1024)), ("gpt2-large", (36, 20, 1280)),
     ("gpt2-xl", (48, 25, 1600))],
)
def test_presets(name, shape):
    c = GPTConfig.from_preset(name)
    assert (c.n_layer, c.n_head, c.n_embd, c.vocab_size, c.block_size) == (*shape, 50257, 1024)


def test_gpt2_parameter_names():
    names = set(GPT(GPTConfig.from_preset("tiny")).state_dict())
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight",
            "transformer.h.1.mlp.c_proj.bias", "transformer.ln_f.weight", "lm_head.weight"} <= names


def test_logits_shape_and_last_only(tiny_model):
    idx = torch.randint(0, 50257, (3, 7))
    logits = tiny_model(idx)
    assert logits.shape == (3, 7, 50257)
    torch.testing.assert_close(tiny_model(idx, last_only=True), logits[:, -1:], atol=1e-6, rtol=0)


def test_causality(tiny_model):
    """Changing a later token never changes the logits of earlier positions."""
    idx = torch.randint(0, 50257, (1, 10))
    changed = idx.clone()
    changed[0, 6] = (idx[0, 6] + 1) % 50257
    a, b = tiny_model(idx), tiny_model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=0, rtol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_sdpa_flag_gives_the_same_logits(tiny_model):
    fast = GPT(GPTConfig.from_preset("tiny", use_sdpa=True)).eval()
    fast.load_state_dict(tiny_model.state_dict())
    idx = torch.randint(0, 50257, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, :5] = 0
    torch.testing.assert_close(fast(idx), tiny_model(idx), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        fast(idx, attention_mask=mask), tiny_model(idx, attention_mask=mask), atol=1e-5, rtol=0
    )


def test_cache_gives_the_same_logits_as_a_full_pass(tiny_model):
    idx = torch.randint(0, 50257, (2, 12))
    cache = KVCache.for_model(tiny_model, batch_size=2)
    first = tiny_model(idx[:, :8], kv_cache=cache)
    steps = [tiny_model(idx[:, t : t + 1], kv_cache=cache) for t in range(8, 12)]
    cached = torch.cat([first, *steps], dim=1)
    torch.testing.assert_close(cached, tiny_model(idx), atol=1e-5, rtol=0)
    assert cache.length == 12


def test_padding_rows_stay_finite(tiny_model):
    idx = torch.randint(0, 50257, (2, 6))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    assert torch.isfinite(tiny_model(idx, attention_mask=mask)).all()


def test_prompt_longer_than_the_context_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match=r"sequence length 129 exceeds the model's context of 128 tokens"):
        tiny_model(torch.zeros(1, 129, dtype=torch.long))


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(n_embd=100, n_head=3), "n_embd must be divisible by n_head, got n_embd=100 and n_head=3"),
        (dict(n_layer=0), "n_layer must be a positive integer, got 0"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
    ],
)
def test_bad_config(fields, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**fields)


def test_unknown_preset():
    with pytest.raises(ValueError, match=rf"preset must be one of {sorted(PRESETS)}, got 'gpt3'".replace("[", r"\[")):
        GPTConfig.from_preset("gpt3")

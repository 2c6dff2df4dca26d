"""GPT-2, written from scratch.

The parameter names follow OpenAI's GPT-2 (``wte``, ``wpe``, ``h.N.attn.c_attn``, ``ln_f``) so real GPT-2
weights map one to one (see ``checkpoint.py``). The model only turns ids into logits; how to pick the next
token is the decoding loop's business (``generate.py``), which also owns the KV cache and hands it in.

>>> model = GPT(GPTConfig.from_preset("tiny"))
>>> model(torch.tensor([[6109, 3626, 6100, 345]])).shape
torch.Size([1, 4, 50257])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt.kv_cache import KVCache


@dataclass
class GPTConfig:
    """The shape of a GPT-2 model. Defaults are GPT-2 small (124M parameters)."""

    vocab_size: int = 50257  # 50,256 BPE merges + <|endoftext|>
    block_size: int = 1024  # context length: the most positions the model can attend over
    n_layer: int = 12  # transformer blocks
    n_head: int = 12  # attention heads per block; n_embd must divide evenly among them
    n_embd: int = 768  # width of the residual stream
    dropout: float = 0.0  # used in training only; 0.0 for inference and for pretrained GPT-2
    use_sdpa: bool = False  # True: F.scaled_dot_product_attention; False: attention written out by hand

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd must be divisible by n_head, got n_embd={self.n_embd} and n_head={self.n_head}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> GPTConfig:
        """A named configuration, optionally with some fields changed.

        >>> GPTConfig.from_preset("gpt2-medium").n_layer
        24
        """
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        """The fields as a plain dict (what checkpoints store as JSON)."""
        return asdict(self)


PRESETS: dict[str, dict] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
    # small shapes for tests and quick experiments; same tokenizer, so the same vocabulary
    "tiny": dict(block_size=128, n_layer=2, n_head=4, n_embd=64),
    "small": dict(block_size=256, n_layer=4, n_head=4, n_embd=128),
}


class CausalSelfAttention(nn.Module):
    """Multi-head attention where each position sees only itself and earlier positions."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_size = config.n_embd // config.n_head
        self.use_sdpa = config.use_sdpa
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, kv_cache: KVCache | None, layer: int
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs): each head attends independently over its own slice
        q, k, v = (t.view(B, T, self.n_head, self.head_size).transpose(1, 2) for t in (q, k, v))
        if kv_cache is not None:
            # keys and values of earlier tokens come from the cache: (B, nh, T_past + T, hs)
            k, v = kv_cache.update(layer, k, v)
        if self.use_sdpa:
            p = self.attn_dropout.p if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_size)  # (B, nh, T, T_past + T)
            scores = scores.masked_fill(~mask, float("-inf"))  # hide future tokens and padding
            weights = self.attn_dropout(F.softmax(scores, dim=-1))
            y = weights @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network: widen 4x, GELU, project back."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 used the tanh approximation
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """One transformer block. Pre-LayerNorm: normalise, transform, add back to the residual stream."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, kv_cache: KVCache | None, layer: int
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, kv_cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """The GPT-2 language model: ids (B, T) in, next-token logits (B, T, vocab_size) out."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
                wpe=nn.Embedding(config.block_size, config.n_embd),  # learned position embeddings
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: the output layer reuses the token embedding matrix (as GPT-2 does)
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer): each block adds two of them
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        """Number of parameters, the tied head counted once.

        >>> GPT(GPTConfig.from_preset("tiny")).num_parameters()
        3324736
        """
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits for every position of ``idx`` (B, T), or only the last one with ``last_only=True``.

        ``attention_mask`` (B, T_past + T) marks real tokens with 1 and padding with 0; ``position_ids``
        (B, T) lets padded rows start counting at their first real token. With a ``kv_cache`` the
        model reads earlier keys and values from it and appends the new ones.

        >>> model = GPT(GPTConfig.from_preset("tiny"))
        >>> model(torch.tensor([[1, 2, 3]]), last_only=True).shape
        torch.Size([1, 1, 50257])
        """
        B, T = idx.shape
        past = kv_cache.length if kv_cache is not None else 0
        if past + T > self.config.block_size:
            raise ValueError(
                f"sequence length {past + T} exceeds the model's context of {self.config.block_size} "
                f"tokens (block_size); shorten the prompt or crop it to the last {self.config.block_size}"
            )
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=idx.device).unsqueeze(0)  # (1, T)
        mask = causal_mask(T, past, attention_mask, idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(position_ids)  # (B, T, C)
        x = self.transformer.drop(x)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, mask, kv_cache, layer)
        if kv_cache is not None:
            kv_cache.advance(T)
        if last_only:
            x = x[:, -1:, :]  # generation needs only the next-token logits: skip the other T-1 rows
        return self.lm_head(self.transformer.ln_f(x))


def causal_mask(
    T: int, past: int = 0, attention_mask: torch.Tensor | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean (B or 1, 1, T, past + T) mask: True where a query may look at a key.

    The ``T`` new tokens sit at positions ``past`` … ``past + T - 1``, after ``past`` cached ones; each
    sees itself and everything before it. ``attention_mask`` (B, past + T), 1 for real tokens and 0 for
    padding, also hides the padding keys.

    >>> causal_mask(2, past=1)[0, 0]  # two new tokens after one cached token
    tensor([[ True,  True, False],
            [ True,  True,  True]])
    >>> causal_mask(2, attention_mask=torch.tensor([[0, 1]]))[0, 0]  # a left-padded row
    tensor([[ True, False],
            [False,  True]])
    """
    if device is None:
        device = attention_mask.device if attention_mask is not None else "cpu"
    query_pos = torch.arange(past, past + T, device=device).unsqueeze(1)  # (T, 1)
    key_pos = torch.arange(past + T, device=device).unsqueeze(0)  # (1, past + T)
    causal = key_pos <= query_pos  # (T, past + T)
    if attention_mask is None:
        return causal.view(1, 1, T, past + T)
    keep = attention_mask.bool().view(attention_mask.size(0), 1, 1, past + T)
    # a padding query would see no key at all and softmax would give NaN, which spreads through
    # the values; letting every query see itself keeps all rows finite (padding rows are ignored)
    return (causal & keep) | (key_pos == query_pos)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids (B, T) that count real tokens only, so a left-padded prompt starts at 0 like any other.

    ``attention_mask`` (B, T) is 1 for real tokens and 0 for padding; padding gets position 1 (any valid
    one would do: the mask hides it), as in transformers.

    >>> position_ids_from_mask(torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]))
    tensor([[1, 1, 0, 1],
            [0, 1, 2, 3]])
    """
    return (attention_mask.cumsum(1) - 1).masked_fill(attention_mask == 0, 1)

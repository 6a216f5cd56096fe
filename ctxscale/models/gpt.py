"""GPT-2 with rotary position embeddings (RoPE), nanoGPT-style, for the context-length sweeps.

Only the model lives here: config, RoPE helpers, blocks, the network. RoPE replaces GPT-2's
learned positions so that one architecture serves every context length with no position table
whose size depends on it (the reference study, arXiv 2502.01481, section on GPT-2 experiments).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .loss import linear_cross_entropy


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int = 6
    n_head: int = 12
    n_embd: int = 768
    vocab_size: int = 50304  # GPT-2's 50,257 padded to a multiple of 64: faster matmuls (nanoGPT)
    dropout: float = 0.0
    bias: bool = False  # biases in Linear and LayerNorm; without them it trains as well and faster
    rope_base: float = 10000.0
    max_seq_len: int = 16384  # longest input; sizes the RoPE cos/sin tables, which are not weights
    # share of each head's channels that RoPE rotates (the first ones); the rest carry no position.
    # 1.0: all (Llama, GPT-NeoX's default); the study's fork rotates half (0.5)
    rope_fraction: float = 1.0
    # training loss with gradients on: 0 computes the (B, T, V) logits, then F.cross_entropy;
    # N > 0 runs lm_head + cross-entropy N rows (tokens) at a time (models/loss.py): no logits for
    # the whole batch, the same loss and gradients up to rounding; not a weight: checkpoints load either way
    loss_chunk_rows: int = 0

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.loss_chunk_rows < 0:
            raise ValueError(f"loss_chunk_rows ({self.loss_chunk_rows}) must be 0 (off) or positive")
        if not 0.0 < self.rope_fraction <= 1.0:
            raise ValueError(f"rope_fraction ({self.rope_fraction}) must be in (0, 1]")
        rotary = self.head_dim * self.rope_fraction
        if rotary != int(rotary) or int(rotary) % 2:
            raise ValueError(
                f"rope_fraction {self.rope_fraction} of head dimension {self.head_dim} gives {rotary:g} rotated "
                "channels: RoPE needs an even whole number"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def rotary_dim(self) -> int:
        """Channels of each head that RoPE rotates (the first `rotary_dim`)."""
        return round(self.head_dim * self.rope_fraction)


# --- RoPE ------------------------------------------------------------------------------------
# "Rotate-half" layout (GPT-NeoX, Llama in Hugging Face): channel i is paired with channel
# i + D/2, and the pair is rotated by the angle pos * base^(-2i/D). Same maths as RoFormer's
# interleaved pairs up to a fixed permutation of channels, with contiguous slices (no strides).


def rope_angles(seq_len: int, head_dim: int, base: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles, each (seq_len, head_dim / 2), float32; `head_dim` is the
    number of rotated channels (`GPTConfig.rotary_dim`), which sets the frequencies.

    Angles in float64: at position 16,384 a float32 angle is off by up to ~1e-3 rad.
    """
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, T, H, D) by position; cos/sin are (T, R/2) for the first R <= D channels, which
    are rotated among themselves (rotate-half within them, GPT-NeoX's `rotary_pct`); channels R..D
    pass unchanged. Computed in float32, returned in x's dtype."""
    rotary = 2 * cos.shape[-1]
    if rotary < x.shape[-1]:
        return torch.cat((apply_rope(x[..., :rotary], cos, sin), x[..., rotary:]), dim=-1)
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, T, H, D/2) each
    cos, sin = cos[:, None, :], sin[:, None, :]  # (T, 1, D/2): broadcast over heads
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.type_as(x)


# --- Blocks ----------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = apply_rope(q.view(B, T, self.n_head, self.head_dim), cos, sin)  # (B, T, H, D)
        k = apply_rope(k.view(B, T, self.n_head, self.head_dim), cos, sin)
        v = v.view(B, T, self.n_head, self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # flash / memory-efficient kernels where available: no (T, T) matrix in memory
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (GPT-2)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cos, sin)
        return x + self.mlp(self.ln_2(x))


# --- Model -----------------------------------------------------------------------------------


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input / output embeddings, as GPT-2
        # RoPE tables computed once: computed inside forward, torch.compile fuses the pow/cos/sin
        # into the rotation kernels and recomputes them for every batch row and head (measured on
        # an H200: 22 % of the step at T = 1,024). Not persistent: checkpoints hold weights only.
        cos, sin = rope_angles(config.max_seq_len, config.rotary_dim, config.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer) so the residual stream's
        # variance does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx, targets: (B, T) token ids. Returns (logits (B, T, V), mean cross-entropy or None).
        Training (targets given, gradients on) returns None for the logits: only the loss is used.

        Why not return them anyway: a compiled forward's backward takes a gradient for each of its
        outputs, and autograd fills an unused one with zeros. For the logits that is a (B, T, V)
        buffer written and read again in every backward pass (0.5 + ~0.5 ms of the 7.7 ms of
        kernels in a step of the 4 x 256 model at 16,384 tokens, vocabulary 50,304). Holding them
        would also keep them alive through the backward pass.
        """
        B, T = idx.shape
        h = self.hidden_states(idx)
        training = targets is not None and torch.is_grad_enabled()
        if training and self.config.loss_chunk_rows:
            # evaluation (no_grad) keeps the plain path: the chunked one also computes gradients
            loss = linear_cross_entropy(h.view(B * T, -1), self.lm_head.weight, targets.view(B * T),
                                        self.config.loss_chunk_rows)
            return None, loss
        logits = self.lm_head(h)  # (B, T, V)
        if targets is None:
            return logits, None
        # float32 softmax for a stable loss; under torch.compile the upcast fuses into the
        # loss kernel instead of materialising a float32 copy of the logits
        loss = F.cross_entropy(logits.float().view(B * T, -1), targets.view(B * T))
        return (None if training else logits), loss

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """The final-norm hidden states (B, T, C) of idx (B, T): what the logits are computed from."""
        T = idx.shape[1]
        if T > self.config.max_seq_len:
            raise ValueError(f"sequence of {T} tokens exceeds max_seq_len = {self.config.max_seq_len}")
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.drop(self.wte(idx))  # (B, T, C); no position embedding: RoPE inside attention
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.ln_f(x)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; the tied embedding / lm_head matrix is counted once, or not at all
        with non_embedding=True."""
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied tensor once
        return n - self.wte.weight.numel() if non_embedding else n

    def flops_per_token(self, context_length: int) -> float:
        """Training FLOPs per token, 6 N + 12 L H Q T (nanoGPT's estimate_mfu, PaLM appendix B).

        N counts every parameter once (the tied lm_head matmul is real work); the attention term
        counts the full T x T score matrix, as the convention does, though causal kernels skip
        half of it.
        """
        c = self.config
        return 6 * self.num_params(non_embedding=False) + 12 * c.n_layer * c.n_head * c.head_dim * context_length

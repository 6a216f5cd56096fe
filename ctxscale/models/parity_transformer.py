"""The parity experiment's model: `ctxscale.models.gpt`'s embedding, RoPE blocks and final norm,
read at the last position (the task token) by a two-way answer head.

No second Transformer: the blocks are GPT's own; only the readout differs (the answer is a bit,
not a next token, and the hidden state that predicts it is the feature the study measures).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .gpt import GPT, GPTConfig


class ParityTransformer(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gpt = GPT(config)  # its tied lm_head is not used: no extra weights
        self.head = nn.Linear(config.n_embd, 2)

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        """The final-norm hidden state (B, n_embd) at the last position of idx (B, T)."""
        return self.gpt.hidden_states(idx)[:, -1]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2) of the answer bit."""
        return self.head(self.features(idx))

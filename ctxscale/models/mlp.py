"""The synthetic experiment's models: the study's MLP and Bi-MLP.

Both take the first `context_length` bits of a string (as +-1 floats) and a one-hot "control"
vector naming the task, and return one logit per row.
"""
from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """in -> h -> h/2 -> h -> 1, LeakyReLU everywhere except after the h/2 layer (as in the study)."""

    def __init__(self, context_length: int, num_tasks: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(context_length + num_tasks, hidden), nn.LeakyReLU(),
            nn.Linear(hidden, hidden // 2),  # the study's bottleneck has no activation after it
            nn.Linear(hidden // 2, hidden), nn.LeakyReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, bits: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        # bits (B, context_length), control (B, num_tasks) -> logits (B,)
        return self.net(torch.cat([bits, control], dim=1)).squeeze(1)


class BiMLP(nn.Module):
    """Bits and control kept apart: bits -> 400 -> 80-dim feature; feature (+) control -> 200 -> 1.

    The 80-dim feature depends on the bits alone, so its spectrum measures what the model
    extracted from the context (the study's intrinsic-dimension probe).
    """

    def __init__(self, context_length: int, num_tasks: int, bits_hidden: int = 400,
                 feature_dim: int = 80, head_hidden: int = 200):
        super().__init__()
        self.bits_net = nn.Sequential(
            nn.Linear(context_length, bits_hidden), nn.LeakyReLU(),
            nn.Linear(bits_hidden, feature_dim), nn.LeakyReLU(),
        )
        self.head = nn.Sequential(
            nn.Linear(feature_dim + num_tasks, head_hidden), nn.LeakyReLU(),
            nn.Linear(head_hidden, 1),
        )

    def features(self, bits: torch.Tensor) -> torch.Tensor:
        return self.bits_net(bits)  # (B, feature_dim)

    def forward(self, bits: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.features(bits), control], dim=1)).squeeze(1)


def build_model(kind: str, context_length: int, num_tasks: int, *, hidden: int = 512,
                bits_hidden: int = 400, feature_dim: int = 80, head_hidden: int = 200) -> nn.Module:
    if kind == "mlp":
        return MLP(context_length, num_tasks, hidden)
    if kind == "bimlp":
        return BiMLP(context_length, num_tasks, bits_hidden, feature_dim, head_hidden)
    raise ValueError(f"unknown synthetic model kind {kind!r} (mlp or bimlp)")

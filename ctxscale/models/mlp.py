"""The synthetic experiment's models: the study's MLP and Bi-MLP.

Both take the first `context_length` bits of a string (as floats, 0/1 or +-1 as the spec's
`data.encoding` says) and a one-hot "control" vector naming the task, and return one logit per
row. The study's code used LeakyReLU with a negative slope of 0.0015 and a linear Bi-MLP feature;
both are arguments here so that other choices stay expressible.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

Widths = Union[int, Sequence[int]]


def hidden_widths(hidden: Widths) -> list[int]:
    """The MLP's hidden widths: an int h is the study's shape [h, h // 2, h]; a list is kept as given.

    >>> hidden_widths(512), hidden_widths([400, 200, 400])
    ([512, 256, 512], [400, 200, 400])
    """
    if isinstance(hidden, int):
        return [hidden, hidden // 2, hidden]
    return [int(w) for w in hidden]


def linear_bottlenecks(widths: Sequence[int]) -> set[int]:
    """Indices of the hidden layers that get no activation: those narrower than both hidden neighbours.

    The study's MLP (h -> h/2 -> h) has no activation after its h/2 layer, so the maps into and out
    of it compose to one rank-h/2 linear map. A layer counts as such a bottleneck only when it has
    a wider hidden layer on each side; the first and last hidden layers are always activated.

    >>> sorted(linear_bottlenecks([400, 200, 400])), sorted(linear_bottlenecks([256, 128, 64]))
    ([1], [])
    """
    return {i for i in range(1, len(widths) - 1) if widths[i] < widths[i - 1] and widths[i] < widths[i + 1]}


class MLP(nn.Module):
    """in -> widths[0] -> ... -> widths[-1] -> 1, LeakyReLU after each hidden layer except linear bottlenecks."""

    def __init__(self, context_length: int, num_tasks: int, hidden: Widths = (400, 200, 400),
                 negative_slope: float = 0.0015):
        super().__init__()
        widths = hidden_widths(hidden)
        linear = linear_bottlenecks(widths)
        layers: list[nn.Module] = []
        fan_in = context_length + num_tasks
        for i, width in enumerate(widths):
            layers.append(nn.Linear(fan_in, width))
            if i not in linear:
                layers.append(nn.LeakyReLU(negative_slope))
            fan_in = width
        layers.append(nn.Linear(fan_in, 1))
        self.net = nn.Sequential(*layers)

    @property
    def bits_input(self) -> nn.Linear:
        """The layer the bits enter: its first `context_length` input columns weigh the bits."""
        return self.net[0]

    @property
    def output(self) -> nn.Linear:
        """The layer that gives the logit."""
        return self.net[-1]

    def forward(self, bits: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        # bits (B, context_length), control (B, num_tasks) -> logits (B,)
        return self.net(torch.cat([bits, control], dim=1)).squeeze(1)


class BiMLP(nn.Module):
    """Bits and control kept apart: bits -> 400 -> 80-dim feature; feature (+) control -> 200 -> 1.

    The 80-dim feature depends on the bits alone, so its spectrum measures what the model
    extracted from the context (the study's intrinsic-dimension probe). In the study's code the
    feature is linear (`feature_activation="none"`); "leaky_relu" puts an activation after it.
    """

    def __init__(self, context_length: int, num_tasks: int, bits_hidden: int = 400,
                 feature_dim: int = 80, head_hidden: int = 200, negative_slope: float = 0.0015,
                 feature_activation: str = "none"):
        super().__init__()
        if feature_activation not in ("none", "leaky_relu"):
            raise ValueError(f"feature_activation must be 'none' or 'leaky_relu', got {feature_activation!r}")
        bits_layers = [nn.Linear(context_length, bits_hidden), nn.LeakyReLU(negative_slope),
                       nn.Linear(bits_hidden, feature_dim)]
        if feature_activation == "leaky_relu":
            bits_layers.append(nn.LeakyReLU(negative_slope))
        self.bits_net = nn.Sequential(*bits_layers)
        self.head = nn.Sequential(
            nn.Linear(feature_dim + num_tasks, head_hidden), nn.LeakyReLU(negative_slope),
            nn.Linear(head_hidden, 1),
        )

    @property
    def bits_input(self) -> nn.Linear:
        """The layer the bits enter: its first `context_length` input columns weigh the bits."""
        return self.bits_net[0]

    @property
    def output(self) -> nn.Linear:
        """The layer that gives the logit."""
        return self.head[-1]

    def features(self, bits: torch.Tensor) -> torch.Tensor:
        return self.bits_net(bits)  # (B, feature_dim)

    def forward(self, bits: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.features(bits), control], dim=1)).squeeze(1)


def build_model(kind: str, context_length: int, num_tasks: int, *, hidden: Widths = (400, 200, 400),
                negative_slope: float = 0.0015, bits_hidden: int = 400, feature_dim: int = 80,
                head_hidden: int = 200, feature_activation: str = "none") -> nn.Module:
    if kind == "mlp":
        return MLP(context_length, num_tasks, hidden, negative_slope)
    if kind == "bimlp":
        return BiMLP(context_length, num_tasks, bits_hidden, feature_dim, head_hidden, negative_slope,
                     feature_activation)
    raise ValueError(f"unknown synthetic model kind {kind!r} (mlp or bimlp)")

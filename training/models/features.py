"""Feature-vector architectures (seed 001: EEG emotion models on 167-dim DEAP or 310-dim SEED features): an MLP, a
1-D CNN over the feature axis and a CNN + bidirectional LSTM. Input ``N x L`` standardised features.

Each has ``features`` (the early layers, which per-person fine-tuning freezes) and ``head`` (the classifier).
"""

from __future__ import annotations

import torch
from torch import nn

from training.models.registry import register_model

DEAP = {"kind": "features", "length": 167}  # the default length; training takes the real one from the data


def _dense(cin: int, cout: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout), nn.ReLU(inplace=True), nn.Dropout(dropout)
    )


class FeatureMLP(nn.Module):
    """Dense layers halving in width: the seed's baseline (``Dense``)."""

    def __init__(
        self, num_classes: int, in_features: int = 167, hidden: int = 256, depth: int = 2, dropout: float = 0.3
    ) -> None:
        super().__init__()
        layers, cin = [], in_features
        for i in range(depth):
            cout = max(8, hidden // 2**i)
            layers.append(_dense(cin, cout, dropout))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _conv_block(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm1d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool1d(2),
    )


class FeatureCNN(nn.Module):
    """1-D convolutions along the feature axis (neighbouring bands and channels), then a dense head; the flatten
    keeps which feature each activation came from (a feature's position is its channel and band)."""

    def __init__(
        self,
        num_classes: int,
        in_features: int = 167,
        width: int = 16,
        blocks: int = 3,
        kernel: int = 5,
        hidden: int = 128,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        convs, cin, length = [], 1, in_features
        for i in range(blocks):
            convs.append(_conv_block(cin, width * 2**i, kernel))
            cin, length = width * 2**i, length // 2
        if length < 1:
            raise ValueError(f"{blocks} pooling blocks need at least {2**blocks} features, got {in_features}")
        self.features = nn.Sequential(*convs, nn.Flatten(), _dense(cin * length, hidden, dropout))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(1)))


class FeatureCNNBiLSTM(nn.Module):
    """Convolutions along the feature axis, then a bidirectional LSTM over the pooled positions (the seed's
    recommended CNN+BiLSTM hybrid); the LSTM's mean and last states feed the head."""

    def __init__(
        self,
        num_classes: int,
        in_features: int = 167,
        width: int = 32,
        blocks: int = 2,
        kernel: int = 5,
        hidden: int = 64,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        convs, cin = [], 1
        for i in range(blocks):
            convs.append(_conv_block(cin, width * 2**i, kernel))
            cin = width * 2**i
        if in_features // 2**blocks < 1:
            raise ValueError(f"{blocks} pooling blocks need at least {2**blocks} features, got {in_features}")
        self.features = nn.Sequential(*convs)
        self.lstm = nn.LSTM(cin, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(self.features(x.unsqueeze(1)).transpose(1, 2))  # N x L' x 2H
        return self.head(torch.cat([seq.mean(dim=1), seq[:, -1]], dim=1))


@register_model(task="feature-classification", input=DEAP)
def feature_mlp(num_classes: int = 5, **kwargs) -> nn.Module:
    """MLP baseline (the seed's ``dense``)."""
    return FeatureMLP(num_classes, **kwargs)


@register_model(task="feature-classification", input=DEAP)
def feature_cnn1d(num_classes: int = 5, **kwargs) -> nn.Module:
    """1-D CNN (the seed's ``cnn``: fast, no temporal model)."""
    return FeatureCNN(num_classes, **kwargs)


@register_model(task="feature-classification", input=DEAP)
def feature_cnn_bilstm(num_classes: int = 5, **kwargs) -> nn.Module:
    """CNN + BiLSTM hybrid (the seed's recommended ``cnn_bilstm``)."""
    return FeatureCNNBiLSTM(num_classes, **kwargs)

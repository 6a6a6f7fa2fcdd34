"""An ensemble served as one graph: several face classifiers over the same input, averaged after calibration."""

from __future__ import annotations

import torch
from torch import nn

from training.models.face import GRAY48
from training.models.registry import create_model, register_model


class Ensemble(nn.Module):
    """Mean of the members' calibrated probabilities, returned as log-probabilities.

    Each member is divided by its own temperature first, so a sharper member does not outvote the rest; the log of
    the mean is a valid logit vector, which the store then calibrates once more as a whole.
    """

    def __init__(self, members: list[nn.Module], temperatures: list[float]) -> None:
        super().__init__()
        if not members or len(members) != len(temperatures):
            raise ValueError("an ensemble needs one temperature per member, and at least one member")
        self.members = nn.ModuleList(members)
        self.register_buffer("inverse_temperature", torch.tensor([1.0 / t for t in temperatures]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = 0
        for i, member in enumerate(self.members):
            out = member(x)
            logits = out[0] if isinstance(out, tuple) else out
            probs = probs + torch.softmax(logits.float() * self.inverse_temperature[i], dim=1)
        return torch.log((probs / len(self.members)).clamp_min(1e-8))


# Two narrow members, so the registry's defaults build (and export) a real ensemble; training.ensemble passes the
# published members instead.
_TINY = {"architecture": "emotion_cnn", "architecture_args": {"width": 8, "hidden": 32}}
_DEFAULT_MEMBERS = ({**_TINY, "temperature": 1.0}, {**_TINY, "temperature": 0.8})


@register_model(task="face-classification", input=GRAY48, members=_DEFAULT_MEMBERS)
def emotion_ensemble(num_classes: int = 7, in_chans: int = 1, members=(), **_) -> nn.Module:
    """``members``: ``[{"architecture", "architecture_args", "temperature"}, ...]`` as recorded in the manifest."""
    nets = [
        create_model(m["architecture"], num_classes, in_chans=in_chans, **m.get("architecture_args", {}))
        for m in members
    ]
    return Ensemble(nets, [float(m.get("temperature", 1.0)) for m in members])

"""An ensemble served as one graph: several face classifiers averaged after calibration. Members may read other
inputs than the ensemble (size, channels, normalisation): each gets its own from the ensemble's, in the graph."""

from __future__ import annotations

import torch
from torch import nn

from training.models.adapt import InputAdapter
from training.models.face import GRAY48
from training.models.registry import create_model, register_model


class Ensemble(nn.Module):
    """Weighted mean of the members' calibrated probabilities, returned as log-probabilities.

    Each member is divided by its own temperature first, so a sharper member does not outvote the rest; the log of
    the mean is a valid logit vector, which the store then calibrates once more as a whole.
    """

    def __init__(
        self,
        members: list[nn.Module],
        temperatures: list[float],
        weights: list[float] | None = None,
        adapters: list[nn.Module] | None = None,
        frozen: list[bool] | None = None,
    ) -> None:
        super().__init__()
        if not members or len(members) != len(temperatures):
            raise ValueError("an ensemble needs one temperature per member, and at least one member")
        weights = [1.0] * len(members) if weights is None else weights
        if len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("an ensemble needs one weight per member, none negative, not all zero")
        self.members = nn.ModuleList(members)
        self.adapters = nn.ModuleList(adapters or [nn.Identity() for _ in members])
        self.register_buffer("inverse_temperature", torch.tensor([1.0 / t for t in temperatures]))
        self.register_buffer("weight", torch.tensor(weights) / sum(weights), persistent=False)
        self.frozen = [bool(f) for f in frozen] if frozen else [False] * len(members)
        if len(self.frozen) != len(members) or all(self.frozen):
            raise ValueError("one frozen flag per member, and at least one member left to train")
        for member, fixed in zip(self.members, self.frozen, strict=True):
            member.requires_grad_(not fixed)

    def train(self, mode: bool = True) -> Ensemble:
        """Frozen members stay in eval mode (batch-norm statistics included) while the others train."""
        super().train(mode)
        for member, fixed in zip(self.members, self.frozen, strict=True):
            if fixed:
                member.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = 0
        for i, (member, adapter) in enumerate(zip(self.members, self.adapters, strict=True)):
            out = member(adapter(x))
            logits = out[0] if isinstance(out, tuple) else out
            probs = probs + self.weight[i] * torch.softmax(logits.float() * self.inverse_temperature[i], dim=1)
        return torch.log(probs.clamp_min(1e-8))


# Two narrow members, so the registry's defaults build (and export) a real ensemble; training.ensemble passes the
# published members instead.
_TINY = {"architecture": "emotion_cnn", "architecture_args": {"width": 8, "hidden": 32}}
_DEFAULT_MEMBERS = ({**_TINY, "temperature": 1.0}, {**_TINY, "temperature": 0.8})


@register_model(task="face-classification", input=GRAY48, members=_DEFAULT_MEMBERS)
def emotion_ensemble(num_classes: int = 7, in_chans: int = 1, members=(), input: dict | None = None, **_) -> nn.Module:
    """``members``: ``[{"architecture", "architecture_args", "temperature", "weight", "input", "frozen"}, ...]`` as
    recorded in the manifest; ``input`` (the ensemble's own, as each member's: height, width, channels, mean, std) is
    needed only when a member records another input than it. ``frozen`` members keep their weights when the
    ensemble is trained as a whole (``training.train --arch emotion_ensemble``): the others learn to complement
    them."""
    nets, adapters = [], []
    for m in members:
        own = m.get("input")
        nets.append(
            create_model(
                m["architecture"],
                num_classes,
                in_chans=own["channels"] if own else in_chans,
                **m.get("architecture_args", {}),
            )
        )
        if own and not input:
            raise ValueError("an ensemble whose members record their inputs needs its own input as well")
        adapters.append(InputAdapter(input, own) if own else nn.Identity())
    temperatures = [float(m.get("temperature", 1.0)) for m in members]
    weights = [float(m.get("weight", 1.0)) for m in members]
    return Ensemble(nets, temperatures, weights, adapters, [bool(m.get("frozen", False)) for m in members])

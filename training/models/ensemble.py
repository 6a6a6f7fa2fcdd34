"""An ensemble served as one graph: several face classifiers averaged after calibration. Members may read other
inputs than the ensemble (size, channels, normalisation): each gets its own from the ensemble's, in the graph."""

from __future__ import annotations

import torch
from torch import nn

from model_store.manifest import routes
from training.models.adapt import InputAdapter, per_channel
from training.models.face import GRAY48
from training.models.registry import create_model, register_model

FACES = ("all", "gray", "colour")
GRAY_SPREAD = 2 / 255


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
        faces: list[str] | None = None,
        input: dict | None = None,
        mirror: list[bool] | None = None,
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
        self.faces = list(faces) if faces else ["all"] * len(members)
        self.mirror = [bool(m) for m in mirror] if mirror else [False] * len(members)
        if len(self.mirror) != len(members):
            raise ValueError("one mirror flag per member")
        self.routes = routes(self.faces)
        self._route_check(input)

    def _route_check(self, input: dict | None) -> None:
        """Members that score only gray or only colour faces need the ensemble's colour input (to tell them apart)
        and every face must have a member."""
        if len(self.faces) != len(self.members) or set(self.faces) - set(FACES):
            raise ValueError(f"one faces value per member, each one of {FACES}")
        if not self.routes:
            return
        if not input or input["channels"] != 3:
            raise ValueError("members routed to gray or colour faces need an ensemble that reads colour")
        for kind in ("gray", "colour"):
            if not any(f in ("all", kind) for f in self.faces):
                raise ValueError(f"no member scores {kind} faces")
        self.register_buffer("in_mean", per_channel(input["mean"]), persistent=False)
        self.register_buffer("in_std", per_channel(input["std"]), persistent=False)

    def train(self, mode: bool = True) -> Ensemble:
        """Frozen members stay in eval mode (batch-norm statistics included) while the others train."""
        super().train(mode)
        for member, fixed in zip(self.members, self.frozen, strict=True):
            if fixed:
                member.eval()
        return self

    def member_logits(self, i: int, x: torch.Tensor) -> torch.Tensor:
        adapter, member = self.adapters[i], self.members[i]
        if getattr(adapter, "gray_plane", False) and hasattr(member, "forward_plane"):  # one plane, its stem folded
            out = member.forward_plane(adapter.plane(x), adapter.target_mean, adapter.target_std)
        else:
            out = member(adapter(x))
        return (out[0] if isinstance(out, tuple) else out).float()

    def member_probs(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """A ``mirror`` member averages its logits over the face and its mirror image in one pass of twice the rows
        (mirror TTA for this member only: the service's own TTA, which doubles every member's work, is then off)."""
        if self.mirror[i]:
            n = x.shape[0]
            both = self.member_logits(i, torch.cat([x, x.flip(3)]))
            logits = (both[:n] + both[n:]) / 2
        else:
            logits = self.member_logits(i, x)
        return torch.softmax(logits * self.inverse_temperature[i], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.routes:
            return self.routed(x)
        probs = 0
        for i in range(len(self.members)):
            probs = probs + self.weight[i] * self.member_probs(i, x)
        return torch.log(probs.clamp_min(1e-8))

    def gray_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Faces whose three channels agree (mean spread under 2 levels of 255): gray photos, FER2013-like crops."""
        pixels = x * self.in_std + self.in_mean
        return (pixels.amax(1) - pixels.amin(1)).mean((1, 2)) < GRAY_SPREAD

    def routed(self, x: torch.Tensor) -> torch.Tensor:
        """Each member scores only the rows it is for (all, gray or colour faces), so a face costs only its own
        members; each row's weights are renormalised over the members that scored it."""
        gray = self.gray_rows(x)
        total, norm = 0.0, 0.0
        for i, kind in enumerate(self.faces):
            if kind == "all":
                mask, p = torch.ones_like(gray), self.member_probs(i, x)
            else:
                mask = gray if kind == "gray" else ~gray
                rows = torch.nonzero(mask).squeeze(1)
                if torch.compiler.is_exporting():
                    torch._check(rows.shape[0] != 0)  # a size hint for the exporter; onnxruntime runs empty selections
                part = self.member_probs(i, x.index_select(0, rows))
                p = part.new_zeros((x.shape[0], part.shape[1])).index_copy(0, rows, part)
            total = total + self.weight[i] * p
            norm = norm + self.weight[i] * mask.float().unsqueeze(1)
        return torch.log((total / norm).clamp_min(1e-8))


# Two narrow members, so the registry's defaults build (and export) a real ensemble; training.ensemble passes the
# published members instead.
_TINY = {"architecture": "emotion_cnn", "architecture_args": {"width": 8, "hidden": 32}}
_DEFAULT_MEMBERS = ({**_TINY, "temperature": 1.0}, {**_TINY, "temperature": 0.8})


@register_model(task="face-classification", input=GRAY48, members=_DEFAULT_MEMBERS)
def emotion_ensemble(num_classes: int = 7, in_chans: int = 1, members=(), input: dict | None = None, **_) -> nn.Module:
    """``members``: ``[{"architecture", "architecture_args", "temperature", "weight", "input", "frozen"}, ...]`` as
    recorded in the manifest; ``input`` (the ensemble's own, as each member's: height, width, channels, mean, std) is
    needed only when a member records another input than it. ``faces`` ("all", "gray" or "colour") runs a member on
    those faces only, which needs the ensemble's colour input. ``frozen`` members keep their weights when the
    ensemble is trained as a whole (``training.train --arch emotion_ensemble``): the others learn to complement
    them. ``mirror`` members average each face with its mirror image inside the graph (the manifest's ``mirror_tta``
    then off), so mirror TTA is paid only where it buys accuracy. ``gray_plane`` members (colour models routed to
    gray faces) get their input resampled as one gray plane (``InputAdapter``)."""
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
        if m.get("gray_plane") and (m.get("faces") != "gray" or not own):
            raise ValueError("gray_plane is for a member routed to gray faces that reads another input than the whole")
        adapters.append(InputAdapter(input, own, bool(m.get("gray_plane"))) if own else nn.Identity())
    temperatures = [float(m.get("temperature", 1.0)) for m in members]
    weights = [float(m.get("weight", 1.0)) for m in members]
    frozen = [bool(m.get("frozen", False)) for m in members]
    faces = [m.get("faces", "all") for m in members]
    mirror = [bool(m.get("mirror", False)) for m in members]
    return Ensemble(nets, temperatures, weights, adapters, frozen, faces, input, mirror)

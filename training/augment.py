"""Batch augmentation on tensors (fast on CPU): flip, shift/scale/rotation, brightness/contrast, low resolution,
erasing."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentCfg:
    hflip: float = 0.5
    rotate_deg: float = 15.0
    shift: float = 0.1
    scale: float = 0.1
    brightness: float = 0.25
    contrast: float = 0.25
    erase_prob: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.2)
    zoom_out: float = 0.0  # extra zoom-out on top of ``scale``: faces shrink to as little as 1 - scale - zoom_out
    lowres_prob: float = 0.0  # share of images shown at a lower resolution (a small or distant face, upsampled)
    lowres_min: int = 16  # the smallest side they are reduced to


def _affine(x: torch.Tensor, cfg: AugmentCfg, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]

    def u():
        return torch.rand(n, generator=gen) * 2 - 1

    angle = u() * math.radians(cfg.rotate_deg)
    low, high = 1.0 - cfg.scale - cfg.zoom_out, 1.0 + cfg.scale  # face size relative to the crop
    scale = low + torch.rand(n, generator=gen) * (high - low)
    flip = torch.where(torch.rand(n, generator=gen) < cfg.hflip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, u() * cfg.shift * 2], 1),
            torch.stack([sin * flip, cos, u() * cfg.shift * 2], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _photometric(x: torch.Tensor, cfg: AugmentCfg, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 1.0 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * cfg.contrast
    brightness = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * cfg.brightness
    return ((x - mean) * contrast + mean + brightness).clamp(0.0, 1.0)


def _erase(x: torch.Tensor, cfg: AugmentCfg, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    area = cfg.erase_area[0] + torch.rand(n, generator=gen) * (cfg.erase_area[1] - cfg.erase_area[0])
    aspect = torch.exp((torch.rand(n, generator=gen) * 2 - 1) * math.log(3.0))
    eh = (torch.sqrt(area * aspect) * h).clamp(1, h).long()
    ew = (torch.sqrt(area / aspect) * w).clamp(1, w).long()
    y0 = (torch.rand(n, generator=gen) * (h - eh + 1)).long()
    x0 = (torch.rand(n, generator=gen) * (w - ew + 1)).long()
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    mask = (
        (rows >= y0.view(n, 1, 1))
        & (rows < (y0 + eh).view(n, 1, 1))
        & (cols >= x0.view(n, 1, 1))
        & (cols < (x0 + ew).view(n, 1, 1))
    )
    mask &= (torch.rand(n, generator=gen) < cfg.erase_prob).view(n, 1, 1)
    noise = torch.rand(x.shape, generator=gen)
    return torch.where(mask.unsqueeze(1), noise, x)


def _lowres(x: torch.Tensor, cfg: AugmentCfg, gen: torch.Generator) -> torch.Tensor:
    """Down to a random side in ``[lowres_min, H)`` and back up, for a ``lowres_prob`` share of the batch."""
    n, _, h, w = x.shape
    pick = torch.rand(n, generator=gen) < cfg.lowres_prob
    if cfg.lowres_prob <= 0 or not pick.any() or cfg.lowres_min >= h:
        return x
    side = int(torch.randint(cfg.lowres_min, h, (1,), generator=gen))  # one size per batch keeps it one call
    small = F.interpolate(x[pick], size=(side, max(1, round(side * w / h))), mode="area")
    out = x.clone()
    out[pick] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return out


def augment_batch(images: torch.Tensor, cfg: AugmentCfg, gen: torch.Generator) -> torch.Tensor:
    """``NxHxWxC`` uint8 -> augmented ``NxHxWxC`` float in 0..255 (normalised later by the shared function).

    Clips ``NxTxHxWxC`` get one draw per clip: frames are folded into channels, so every frame of a clip is
    flipped, warped and erased alike.
    """
    if images.ndim == 5:
        n, t, h, w, c = images.shape
        folded = augment_batch(images.permute(0, 2, 3, 1, 4).reshape(n, h, w, t * c), cfg, gen)
        return folded.reshape(n, h, w, t, c).permute(0, 3, 1, 2, 4)
    x = images.permute(0, 3, 1, 2).float() / 255.0
    x = _erase(_photometric(_lowres(_affine(x, cfg, gen), cfg, gen), cfg, gen), cfg, gen)
    return x.permute(0, 2, 3, 1) * 255.0

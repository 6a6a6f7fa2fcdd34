"""Batch augmentation on tensors (fast on CPU): flip, shift/scale/rotation, brightness/contrast, low resolution,
blur, low light, JPEG artefacts, erasing; and mixup/CutMix, which mix labels too.

The photo-like steps (blur, low light, JPEG) are what separates a phone or news photo from a studio crop: they are
off by default so that older recipes replay unchanged."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
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
    blur_prob: float = 0.0  # share of images blurred (defocus, motion, a soft phone lens)
    blur_sigma: float = 1.5  # largest Gaussian sigma, in pixels of the model input
    dark_prob: float = 0.0  # share of images darkened (gamma up to ``dark_gamma``) with sensor noise
    dark_gamma: float = 2.5
    jpeg_prob: float = 0.0  # share of images re-encoded as JPEG
    jpeg_quality: tuple[int, int] = (15, 60)
    gray_prob: float = 0.0  # share of colour images turned gray (so gray input does not signal one data set)


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


def _blur(x: torch.Tensor, cfg: AugmentCfg, gen: torch.Generator) -> torch.Tensor:
    """Separable Gaussian blur with a sigma drawn per image, for a ``blur_prob`` share."""
    n = x.shape[0]
    pick = torch.rand(n, generator=gen) < cfg.blur_prob
    if cfg.blur_prob <= 0 or not pick.any():
        return x
    sigma = 0.5 + torch.rand(int(pick.sum()), generator=gen) * max(cfg.blur_sigma - 0.5, 0.0)
    radius = max(1, math.ceil(3 * float(sigma.max())))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-(taps.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # k x taps, one kernel per picked image
    sel = x[pick]
    k, c, h, w = sel.shape
    flat = sel.reshape(1, k * c, h, w)
    per_channel = kernel.repeat_interleave(c, 0)
    flat = F.conv2d(
        F.pad(flat, (radius, radius, 0, 0), mode="replicate"), per_channel.view(k * c, 1, 1, -1), groups=k * c
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, radius, radius), mode="replicate"), per_channel.view(k * c, 1, -1, 1), groups=k * c
    )
    out = x.clone()
    out[pick] = flat.reshape(k, c, h, w)
    return out


def _dark(x: torch.Tensor, cfg: AugmentCfg, gen: torch.Generator) -> torch.Tensor:
    """Low light: a gamma above 1 crushes the shadows, and the noise a sensor adds when it amplifies them."""
    n = x.shape[0]
    pick = (torch.rand(n, generator=gen) < cfg.dark_prob).view(n, 1, 1, 1)
    if cfg.dark_prob <= 0 or not pick.any():
        return x
    gamma = 1.0 + torch.rand(n, 1, 1, 1, generator=gen) * (cfg.dark_gamma - 1.0)
    noise = torch.randn(x.shape, generator=gen) * 0.03 * (gamma - 1.0)
    dark = (x.clamp(0.0, 1.0) ** gamma + noise).clamp(0.0, 1.0)
    return torch.where(pick, dark, x)


def _jpeg(x: torch.Tensor, cfg: AugmentCfg, gen: torch.Generator) -> torch.Tensor:
    """Real JPEG round trips (OpenCV) at a random quality, for a ``jpeg_prob`` share: blocking and ringing."""
    n = x.shape[0]
    pick = torch.nonzero(torch.rand(n, generator=gen) < cfg.jpeg_prob).flatten()
    if cfg.jpeg_prob <= 0 or len(pick) == 0:
        return x
    low, high = cfg.jpeg_quality
    quality = torch.randint(low, high + 1, (len(pick),), generator=gen)
    out = x.clone()
    for i, q in zip(pick.tolist(), quality.tolist(), strict=True):
        image = (x[i].permute(1, 2, 0).clamp(0.0, 1.0) * 255.0).round().byte().numpy()
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(q)])
        back = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else image
        back = back.reshape(image.shape)
        out[i] = torch.from_numpy(np.ascontiguousarray(back)).permute(2, 0, 1).float() / 255.0
    return out


def _gray(x: torch.Tensor, cfg: AugmentCfg, gen: torch.Generator) -> torch.Tensor:
    """The channel mean in every channel, for a ``gray_prob`` share of a colour batch."""
    n = x.shape[0]
    pick = (torch.rand(n, generator=gen) < cfg.gray_prob).view(n, 1, 1, 1)
    if cfg.gray_prob <= 0 or x.shape[1] == 1 or not pick.any():
        return x
    return torch.where(pick, x.mean(dim=1, keepdim=True).expand_as(x), x)


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
    x = _blur(_lowres(_affine(x, cfg, gen), cfg, gen), cfg, gen)
    x = _jpeg(_dark(_photometric(_gray(x, cfg, gen), cfg, gen), cfg, gen), cfg, gen)
    x = _erase(x, cfg, gen)
    return x.permute(0, 2, 3, 1) * 255.0


def mix_batch(
    x: torch.Tensor, targets: torch.Tensor, mixup: float, cutmix: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (``alpha=mixup``) or CutMix (``alpha=cutmix``), one chosen per batch with equal odds when both are on.

    ``x`` is ``NxCxHxW``, ``targets`` ``NxK`` label distributions; each row is blended with a random partner of the
    same batch and its target by the same share (for CutMix, the share of the box actually pasted).
    """
    if mixup <= 0 and cutmix <= 0:
        return x, targets
    use_cut = cutmix > 0 and (mixup <= 0 or bool(torch.rand(1, generator=gen) < 0.5))
    alpha = cutmix if use_cut else mixup
    lam = float(np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen))).beta(alpha, alpha))
    partner = torch.randperm(x.shape[0], generator=gen)
    if not use_cut:
        return lam * x + (1 - lam) * x[partner], lam * targets + (1 - lam) * targets[partner]
    h, w = x.shape[-2:]
    ch, cw = round(h * math.sqrt(1 - lam)), round(w * math.sqrt(1 - lam))
    cy, cx = int(torch.randint(h, (1,), generator=gen)), int(torch.randint(w, (1,), generator=gen))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch - ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)
    out = x.clone()
    out[..., y0:y1, x0:x1] = x[partner][..., y0:y1, x0:x1]
    kept = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return out, kept * targets + (1 - kept) * targets[partner]


def reframe(images: torch.Tensor, shift_sd: float, scale_sd: float, gen: torch.Generator) -> torch.Tensor:
    """A second framing of the same ``NxHxWxC`` faces: the crop's centre moved by ``shift_sd`` and its log-size by
    ``scale_sd`` (Gaussian, in crop widths), edges replicated. The two views of a consistency loss differ by this
    much, matched to how far the detector's box moves when nothing about the face changes (``benchmarks.stability``
    measured a centre sd of 0.011-0.018 and a log-size sd of about 0.05)."""
    n = images.shape[0]
    x = images.permute(0, 3, 1, 2)
    scale = torch.exp(torch.randn(n, generator=gen) * scale_sd)
    shift = torch.randn(n, 2, generator=gen) * shift_sd * 2  # affine_grid spans -1..1: one crop width is 2
    zero = torch.zeros(n)
    theta = torch.stack(
        [torch.stack([1 / scale, zero, shift[:, 0]], 1), torch.stack([zero, 1 / scale, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).permute(0, 2, 3, 1)


CANVAS_SHRINK = (0.75, 0.95)  # the image's side within the crop on a canvas view: the photo's edge inside the crop


def on_canvas(images: torch.Tensor, share: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views of ``NxHxWxC`` faces whose image edge lies inside the crop, for a share of rows: the image shrunk
    within the crop (side ``CANVAS_SHRINK``, placed anywhere it fits), with what lies outside it filled by repeating
    its border (what the service cuts from a tight photo, ``input.edge: replicate``) in the first view and by one
    plain gray level in the second (the same photo on a canvas). Other rows come back unchanged in both. A
    consistency loss between them teaches the model that what surrounds the photo is not the face (issue 30)."""
    n = images.shape[0]
    chosen = torch.rand(n, generator=gen) < share
    a, b = images.clone(), images.clone()
    if not chosen.any():
        return a, b
    x = images[chosen].permute(0, 3, 1, 2)
    k = x.shape[0]
    side = CANVAS_SHRINK[0] + torch.rand(k, generator=gen) * (CANVAS_SHRINK[1] - CANVAS_SHRINK[0])
    room = 1 - side  # in half crop widths (affine_grid spans -1..1): how far the image may sit off centre
    centre = (torch.rand(k, 2, generator=gen) * 2 - 1) * room[:, None]
    zero, inv = torch.zeros(k), 1 / side
    theta = torch.stack(
        [torch.stack([inv, zero, -centre[:, 0] * inv], 1), torch.stack([zero, inv, -centre[:, 1] * inv], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    replicated = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside = F.grid_sample(torch.ones_like(x[:, :1]), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    level = torch.rand(k, 1, 1, 1, generator=gen) * 255.0
    plain = replicated * inside + level * (1 - inside)
    a[chosen], b[chosen] = replicated.permute(0, 2, 3, 1), plain.permute(0, 2, 3, 1)
    return a, b

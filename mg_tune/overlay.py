"""Attribution overlays: the pictures people look at to judge guidance.

Each image becomes two panels: the image with its annotation mask outlined in
green, and the positive attribution Â⁺ = A⁺ / max(A⁺) blended in red over a
grey copy of the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

SCALE = 2
GREEN = np.array([0.1, 0.9, 0.2])
RED = np.array([1.0, 0.1, 0.1])


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def overlay_panels(image: np.ndarray, attribution: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``[H, 2W, 3]`` float panels for one image ``[3,H,W]``, map ``[H,W]``, mask ``[H,W]``."""
    rgb = np.clip(image.transpose(1, 2, 0), 0, 1)
    left = rgb.copy()
    left[_outline(mask > 0.5)] = GREEN
    positive = np.clip(attribution, 0, None)
    heat = positive / positive.max() if positive.max() > 0 else positive
    grey = rgb.mean(axis=2, keepdims=True).repeat(3, axis=2) * 0.6
    right = grey * (1 - heat[..., None]) + RED * heat[..., None]
    right[_outline(mask > 0.5)] = GREEN
    return np.concatenate([left, right], axis=1)


def save_overlay(path: str | Path, images: Tensor, maps: Tensor, masks: Tensor) -> Path:
    """Stack the panels of every image vertically and save a PNG at ``path``."""
    rows = [
        overlay_panels(img.numpy(), a.numpy(), m.numpy())
        for img, a, m in zip(images.float().cpu(), maps.float().cpu(), masks.float().cpu())
    ]
    grid = (np.concatenate(rows, axis=0) * 255).round().astype(np.uint8)
    picture = Image.fromarray(grid).resize((grid.shape[1] * SCALE, grid.shape[0] * SCALE), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path

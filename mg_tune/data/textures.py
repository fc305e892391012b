"""Procedural textured backgrounds for TextBox (issue 17; SMERF's textured-background setting).

On the plain TextBox background (uniform noise in [0, 0.1)) an Input×Gradient
map, x ⊙ ∇_x y, is ≈ 0 around the white objects because x is: guidance cannot
move attribution into a box's background margin, unlike on natural images.
:func:`texture` paints a background with structure at several scales and a
brightness well above 0, so every pixel carries signal a model can attend to.

The texture is a pure function of the random generator (no files, no downloads):

    T = Σ_{o=0}^{3} 2^{−o} · U_o(V_o) + ½ · g ⊙ sin(2π f (x cos θ + y sin θ) + φ),

with V_o uniform random values on a (3·2^o + 1)² grid per colour channel, U_o
bilinear upsampling to the image, and a colour-weighted grating (g ∈ [0, 1]³,
f ∈ [0.05, 0.25] cycles/px, θ, φ uniform): fractal value noise (stone, foliage)
plus an oriented periodic pattern (fabric, water). T is then mapped affinely per
image onto [``low``, ``high``] (default [0.1, 0.7]), so the white objects (1.0)
remain the brightest pixels.
"""

from __future__ import annotations

import numpy as np

TEXTURE_RANGE: tuple[float, float] = (0.1, 0.7)
"""Darkest and brightest value of a textured background (objects are 1.0)."""
OCTAVES = 4
"""Value-noise grids of 3·2^o + 1 points per side, o = 0 .. OCTAVES − 1."""


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``[C, g, g]`` (corner-aligned) to ``[C, size, size]``."""
    g = grid.shape[-1]
    t = np.linspace(0.0, g - 1.0, size)
    i0 = np.minimum(np.floor(t).astype(int), g - 2)
    f = t - i0
    rows = grid[:, i0, :] * (1 - f)[None, :, None] + grid[:, i0 + 1, :] * f[None, :, None]
    return rows[:, :, i0] * (1 - f) + rows[:, :, i0 + 1] * f


def texture(rng: np.random.Generator, size: int, low: float = TEXTURE_RANGE[0], high: float = TEXTURE_RANGE[1]) -> np.ndarray:
    """A float32 ``[3, size, size]`` textured background in [``low``, ``high``] (module docstring)."""
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"texture range must satisfy 0 <= low < high <= 1, got low={low}, high={high}")
    image = np.zeros((3, size, size))
    for o in range(OCTAVES):
        image += 2.0**-o * _upsample(rng.uniform(size=(3, 3 * 2**o + 1, 3 * 2**o + 1)), size)
    theta, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    freq = rng.uniform(0.05, 0.25)
    y, x = np.mgrid[0:size, 0:size]
    wave = np.sin(2 * np.pi * freq * (x * np.cos(theta) + y * np.sin(theta)) + phase)
    image += 0.5 * rng.uniform(size=(3, 1, 1)) * wave
    lo, hi = image.min(), image.max()
    return (low + (high - low) * (image - lo) / (hi - lo)).astype(np.float32)

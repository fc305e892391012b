"""Decoding a real data set's images, and the one geometric transform of an image and its masks.

Masks are rasterised at the image's own resolution, then the image and all masks go
through **one** ``torchvision.transforms.v2`` call (a ``tv_tensors.Image`` and a
:class:`PixelMask`): ``Resize((S, S))`` (bilinear, antialiased, for the image;
nearest-exact for masks), or on ``train`` with ``augment`` ``RandomResizedCrop((S, S))`` +
``RandomHorizontalFlip()``, so crops and flips stay aligned pixel for pixel
(:func:`build_transform`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from mg_tune.data.errors import DatasetError

def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the image header only (no decoding); DatasetError if missing or unreadable."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DatasetError(path, "image file is missing") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(path, f"not a readable image ({exc})") from None



class PixelMask(tv_tensors.Mask):
    """A ``tv_tensors.Mask`` that is resized with ``NEAREST_EXACT`` instead of v2's legacy ``NEAREST``.

    Legacy nearest (``floor(i * scale)``) shifts a mask by up to half an input pixel
    against the image's bilinear resize, which samples at pixel centres; nearest-exact
    (``floor((i + 0.5) * scale)``) samples the same centres, so a mask stays on the
    pixels it covers in the image. Every other kernel (crop, flip) is the Mask's own.
    """


@TF.register_kernel(TF.resize, PixelMask)
def _resize_pixel_mask(mask: torch.Tensor, size: list[int] | None, interpolation: Any = None, max_size: int | None = None, antialias: Any = None) -> torch.Tensor:
    out = TF.resize_mask(mask.as_subclass(torch.Tensor), size, interpolation=InterpolationMode.NEAREST_EXACT, max_size=max_size)
    return tv_tensors.wrap(out, like=mask)


@TF.register_kernel(TF.resized_crop, PixelMask)
def _resized_crop_pixel_mask(mask: torch.Tensor, top: int, left: int, height: int, width: int, size: list[int], **kwargs: Any) -> torch.Tensor:
    cropped = TF.crop_mask(mask.as_subclass(torch.Tensor), top, left, height, width)
    out = TF.resize_mask(cropped, size, interpolation=InterpolationMode.NEAREST_EXACT)
    return tv_tensors.wrap(out, like=mask)


def build_transform(size: int, augment: bool) -> v2.Compose:
    """The one geometric transform applied to an image and its masks together (see module doc)."""
    if augment:
        geometry = [v2.RandomResizedCrop((size, size), antialias=True), v2.RandomHorizontalFlip()]
    else:
        geometry = [v2.Resize((size, size), antialias=True)]
    return v2.Compose([*geometry, v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)])


EXIF_ORIENTATION = 0x0112
"""The EXIF tag saying how a viewer turns the stored pixels; 5..8 swap width and height. mg-tune reads the stored pixels, as the official data sets store them."""


def _decoded_rgb(path: str | Path, width: int, height: int, source: str) -> Image.Image:
    """Every pixel of ``path`` decoded as RGB (a truncated file fails here, not at its header); DatasetError naming the file (and ``source``, the annotation file, for a wrong size)."""
    try:
        with Image.open(path) as im:
            turned = im.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
            rgb = im.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(path, "image file is missing") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DatasetError(path, f"not a readable image ({exc})") from None
    if rgb.size != (width, height):
        hint = ""
        if turned and rgb.size == (height, width):  # phone photos: labelling tools show (and annotate) them turned
            hint = "; its EXIF orientation turns it by 90 degrees and the annotation was drawn on the turned image: save the images turned (PIL.ImageOps.exif_transpose)"
        raise DatasetError(path, f"image is {rgb.size[0]}x{rgb.size[1]} but {source} says {width}x{height}{hint}")
    return rgb


def load_rgb(path: str, width: int, height: int, source: str) -> torch.Tensor:
    """Decode ``path`` as uint8 ``[3, H, W]`` RGB; DatasetError if unreadable or not ``width`` x ``height`` (as ``source`` says)."""
    return torch.from_numpy(np.asarray(_decoded_rgb(path, width, height, source)).copy()).permute(2, 0, 1)


def check_decodes(path: str | Path, width: int, height: int, source: str) -> None:
    """Decode the whole image at ``path`` once per process and file version; DatasetError if it cannot be, or is not ``width`` x ``height``.

    Headers alone do not find a truncated JPEG (PIL reads its size, then fails on the
    pixels), so ``data check`` and ``on_bad_sample: skip`` decode every image. The verdict
    is cached by path, modification time and size: train, val and held-out splits built
    in one process decode each image once.
    """
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise DatasetError(path, "image file is missing") from None
    problem = _decode_problem(str(path), stat.st_mtime_ns, stat.st_size, width, height, source)
    if problem is not None:
        raise DatasetError(path, problem)


@functools.lru_cache(maxsize=None)
def _decode_problem(path: str, mtime_ns: int, size: int, width: int, height: int, source: str) -> str | None:
    try:
        _decoded_rgb(path, width, height, source)
    except DatasetError as exc:
        return exc.problem
    return None

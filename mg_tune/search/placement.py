"""Where Ray placed a trial's GPUs, as run tags (``mg_tune.gpu_ids``, ``mg_tune.cuda_visible_devices``, ``mg_tune.gpu``).

Ray gives a trial that asks ``resources: {gpu: g}`` GPU ids on its node (one id shared by up to
``1/g`` trials for a fraction ``g < 1``) and sets ``CUDA_VISIBLE_DEVICES`` in its process from them;
``device: auto`` then trains on the first of them (:func:`mg_tune.train.resolve_device`).
"""

from __future__ import annotations

import os

import ray

from mg_tune.train import physical_gpu, resolve_device


def gpu_tags(device: str) -> dict[str, str]:
    """The GPUs Ray assigned this trial and the one its ``device`` trains on, as run tags.

    ``mg_tune.gpu_ids``: ``ray.get_gpu_ids()`` (comma-separated; a fractional ``gpu`` shares one id
    with other trials), ``mg_tune.cuda_visible_devices``: what Ray set from them, both only for a
    trial Ray gave GPUs; ``mg_tune.gpu``: the machine's id of the GPU ``device`` resolves to
    (:func:`mg_tune.train.physical_gpu`), only where it is a CUDA device.
    """
    tags = {}
    if gpu_ids := ray.get_gpu_ids():
        tags["mg_tune.gpu_ids"] = ",".join(str(i) for i in gpu_ids)
        tags["mg_tune.cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if (gpu := physical_gpu(resolve_device(device), os.environ.get("CUDA_VISIBLE_DEVICES"))) is not None:
        tags["mg_tune.gpu"] = gpu
    return tags

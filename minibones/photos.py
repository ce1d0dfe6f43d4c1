"""Real photographs for looking inside networks, shipped by installed packages (no network).

``load_photo("cat")`` returns the picture to *show* (an RGB uint8 array) and the
tensor to *feed* (resized, centre-cropped, normalised with the model's mean/std),
so a notebook never shows one image and explains another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from minibones.backbone import IMAGENET_MEAN, IMAGENET_STD

PHOTOS = {
    "cat": "scikit-image: data.chelsea()",
    "astronaut": "scikit-image: data.astronaut()",
    "coffee": "scikit-image: data.coffee()",
    "rocket": "scikit-image: data.rocket()",
    "grace_hopper": "matplotlib: sample_data/grace_hopper.jpg",
}


@dataclass
class Photo:
    name: str
    image: np.ndarray  # (H, W, 3) uint8, what the model sees, for display
    tensor: Tensor  # (1, 3, H, W) float32, normalised, the model's input
    source: str


def read_photo(name: str) -> np.ndarray:
    """The full-size photograph as an (H, W, 3) uint8 array."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {sorted(PHOTOS)}")
    if name == "grace_hopper":
        import matplotlib
        from matplotlib.image import imread

        return imread(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    import skimage.data

    return {"cat": skimage.data.chelsea, "astronaut": skimage.data.astronaut,
            "coffee": skimage.data.coffee, "rocket": skimage.data.rocket}[name]()


def load_photo(
    name: str,
    size: int = 224,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> Photo:
    """Resize the short side to ``size``, centre-crop a ``size`` x ``size`` square, normalise.

    (The reference models resize to 256 then crop 224 for evaluation; for looking
    inside a network the whole object matters more, so we crop the short side.)
    """
    image = torch.from_numpy(np.array(read_photo(name), copy=True)).permute(2, 0, 1).float() / 255
    height, width = image.shape[1:]
    scale = size / min(height, width)
    new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
    image = torch.nn.functional.interpolate(image[None], size=new_size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    image = image[:, :, top : top + size, left : left + size].clamp(0, 1)
    display = (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    tensor = (image - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return Photo(name, display, tensor.contiguous(), PHOTOS[name])

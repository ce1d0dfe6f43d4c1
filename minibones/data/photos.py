"""Real photographs for looking inside networks, shipped by installed packages (no network).

``load_photo("cat")`` returns the picture to *show* (an RGB uint8 array) and the
tensor to *feed* (resized, centre-cropped, normalised with the model's mean/std),
so a notebook never shows one image and explains another.

:data:`PHOTOS` are the five photographs the course shows everywhere; :data:`MORE_PHOTOS`
are further real photographs of objects, for measurements that need more than five
images (deletion and insertion curves in notebook 08). :func:`side_by_side` puts
two photographs next to each other: one image with two objects whose classes compete.
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
MORE_PHOTOS = {
    "motorcycle": "scikit-image: data.stereo_motorcycle()[0] (Middlebury stereo, left view)",
    "cameraman": "scikit-image: data.camera() (grey, copied to 3 channels)",
    "clock": "scikit-image: data.clock() (grey, copied to 3 channels)",
    "china": "scikit-learn: datasets.load_sample_image('china.jpg')",
    "flower": "scikit-learn: datasets.load_sample_image('flower.jpg')",
}


@dataclass
class Photo:
    name: str
    image: np.ndarray  # (H, W, 3) uint8, what the model sees, for display
    tensor: Tensor  # (1, 3, H, W) float32, normalised, the model's input
    source: str


def read_photo(name: str) -> np.ndarray:
    """The full-size photograph as an (H, W, 3) uint8 array."""
    if name not in PHOTOS and name not in MORE_PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {sorted(PHOTOS) + sorted(MORE_PHOTOS)}")
    if name == "grace_hopper":
        import matplotlib
        from matplotlib.image import imread

        return imread(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    import skimage.data

    readers = {"cat": skimage.data.chelsea, "astronaut": skimage.data.astronaut, "coffee": skimage.data.coffee,
               "rocket": skimage.data.rocket, "cameraman": skimage.data.camera, "clock": skimage.data.clock,
               "motorcycle": lambda: skimage.data.stereo_motorcycle()[0]}
    image = readers[name]()
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


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
    source = PHOTOS.get(name) or MORE_PHOTOS[name]
    return Photo(name, display, _normalise(image, mean, std).contiguous(), source)


def _normalise(pixels: Tensor, mean: tuple[float, float, float], std: tuple[float, float, float]) -> Tensor:
    """(1, 3, H, W) pixels in [0, 1] -> the model's input: minus the mean colour, over the std."""
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def side_by_side(
    left: str,
    right: str,
    size: int = 224,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> Photo:
    """Two photographs, each loaded as by :func:`load_photo`, next to each other: one
    (size, 2 * size) image holding two objects, whose left half is ``left`` and right half
    ``right``. A map that explains one class should then sit in one half."""
    photos = [load_photo(name, size, mean, std) for name in (left, right)]
    image = np.concatenate([photo.image for photo in photos], axis=1)  # (size, 2 * size, 3)
    tensor = torch.cat([photo.tensor for photo in photos], dim=-1)  # (1, 3, size, 2 * size)
    source = f"{photos[0].source} | {photos[1].source}, side by side"
    return Photo(f"{left}|{right}", image, tensor, source)


def dataset_inputs(
    data,
    count: int,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> list[Tensor]:
    """``count`` test images of a :class:`minibones.data.Data` as normalised (1, 3, H, W) inputs,
    evenly spread over its test split (an image folder lists its images class by class, so
    the first ``count`` would all show one class). For measurements that need more images
    than the photographs above (notebook 08's deletion curves in the full regime)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive whole number, got {count!r}")
    total = len(data.test)
    indices = np.linspace(0, total - 1, min(count, total)).round().astype(int)
    inputs = []
    for index in indices:
        image, _ = data.test[int(index)]  # (3, H, W) uint8
        pixels = torch.as_tensor(image).as_subclass(Tensor).float()[None] / 255  # a plain tensor, not a tv_tensor
        inputs.append(_normalise(pixels, mean, std).contiguous())
    return inputs

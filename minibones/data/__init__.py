"""The course's data: real datasets when you have them, an embedded default when you don't.

    >>> data = load_data("cifar10")          # local copy, else download, else the digits (said out loud)
    >>> train_loader, test_loader = data.loaders(batch_size=128, device="cuda")

Where the files live (see ``data/README.md``): the folder named by the environment
variable ``MINIBONES_DATA``, else ``data/`` at the top of the repository. Every
dataset is read from its *standard* layout there (the one its publisher ships),
so a copy made by hand, by torchvision or by another course works as it is.

Three modules, read in this order:
  * :mod:`~minibones.data.archives`: where data lives, and fetching a publisher's
    archive (download, md5 check, atomic unpacking);
  * :mod:`~minibones.data.datasets`: :class:`Data`, the digits, CIFAR-10/100, Imagenette
    and any ImageFolder tree, and :func:`load_data`, the one entry point, with the fallback;
  * :mod:`~minibones.data.loaders`: :class:`DeviceTensorLoader` keeps a small dataset on
    the GPU and augments it there; :class:`DeviceLoader` wraps a DataLoader for image folders.

The sample photographs for looking inside networks are in :mod:`minibones.data.photos`.
"""

from minibones.data.archives import (
    CIFAR10_ARCHIVE,
    CIFAR100_ARCHIVE,
    DATA_ENV,
    IMAGENETTE_ARCHIVE,
    Archive,
    DatasetNotFound,
    data_root,
    fetch,
)
from minibones.data.datasets import (
    CIFAR,
    DATASETS,
    IMAGENETTE_CLASSES,
    Data,
    ImageTensors,
    cifar,
    digits,
    image_folder,
    imagenette,
    load_data,
)
from minibones.data.loaders import DeviceLoader, DeviceTensorLoader, normalize, random_crop_flip

__all__ = [
    "CIFAR", "CIFAR10_ARCHIVE", "CIFAR100_ARCHIVE", "DATASETS", "DATA_ENV", "IMAGENETTE_ARCHIVE", "IMAGENETTE_CLASSES",
    "Archive", "Data", "DatasetNotFound", "DeviceLoader", "DeviceTensorLoader", "ImageTensors", "cifar", "data_root",
    "digits", "fetch", "image_folder", "imagenette", "load_data", "normalize", "random_crop_flip",
]

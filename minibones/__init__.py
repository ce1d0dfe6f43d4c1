"""minibones: vision backbones built from scratch, each proven against its reference.

    >>> import minibones
    >>> model = minibones.create_model("resnet50")
    >>> [info.stride for info in model.feature_info]
    [2, 4, 8, 16, 32]
"""

from minibones.backbone import Backbone, ModelConfig, StageInfo, count_parameters
from minibones.data import Data, DatasetNotFound, load_data
from minibones.train import History, TrainConfig, fit
from minibones.porting import WeightLoadError, load_reference_weights
from minibones.pretrained import load_pretrained, predict, preprocess_for
from minibones.registry import build_on_meta, create_model, list_models, register_model
from minibones import models  # noqa: F401  (registers every family)

__all__ = [
    "Backbone",
    "Data",
    "DatasetNotFound",
    "History",
    "ModelConfig",
    "StageInfo",
    "TrainConfig",
    "build_on_meta",
    "WeightLoadError",
    "count_parameters",
    "create_model",
    "fit",
    "list_models",
    "load_data",
    "load_pretrained",
    "load_reference_weights",
    "predict",
    "preprocess_for",
    "register_model",
]
__version__ = "0.1.0"

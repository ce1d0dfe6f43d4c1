"""Seeing inside every backbone: activations, receptive fields, feature visualization,
embeddings and attributions, drawn one consistent way.

    >>> import minibones
    >>> from minibones import viz
    >>> model = minibones.create_model("resnet18")
    >>> [rf.size for rf in viz.receptive_fields(model)]
    [(7, 7), (43, 43), (99, 99), (211, 211), (435, 435)]

Modules, in the order of the course (notebooks 07 and 08):

* :mod:`~minibones.viz.activations`     - hooks, feature maps, first-layer filters, stage statistics
* :mod:`~minibones.viz.receptive_field` - analytic (Araujo et al. 2019) and effective (Luo et al. 2016) fields
* :mod:`~minibones.viz.feature_vis`     - activation maximization (Olah et al. 2017)
* :mod:`~minibones.viz.embedding`       - PCA / t-SNE of pooled features
* :mod:`~minibones.viz.attribution`     - captum methods, Grad-CAM, ViT attention and rollout
* :mod:`~minibones.viz.sanity`          - model randomization (Adebayo et al. 2018),
                                          deletion/insertion curves (Petsiuk et al. 2018)
* :mod:`~minibones.viz.display`         - the one display convention every figure uses

Every plotting function returns a matplotlib ``Figure``.
"""

from minibones.viz.activations import (
    capture, compare_stages, feature_grid, first_conv, first_layer_filters, layer_outputs, resolve_layer,
    stage_or_layer_output, stage_statistics, strongest_channels,
)
from minibones.viz.attribution import (
    DEFAULT_METHODS, METHODS, Attribution, attention_maps, attention_rollout, attribute, attribution_grid,
    non_relu_activations, plot_attention, predicted_class,
)
from minibones.viz.display import as_input, normalize_map, overlay_rgba, show_overlay, to_image
from minibones.viz.embedding import embed_2d, plot_embedding, pooled_features
from minibones.viz.feature_vis import ImageParameterization, maximize_activation, plot_feature_visualization
from minibones.viz.receptive_field import (
    ReceptiveField, effective_receptive_field, format_receptive_fields, plot_receptive_field, receptive_fields,
)
from minibones.viz.sanity import (
    FaithfulnessCurve, RandomizationStep, cascading_layers, deletion_insertion, model_randomization_test,
    plot_deletion_insertion, plot_model_randomization, randomize_module_,
)

__all__ = [
    "Attribution", "DEFAULT_METHODS", "FaithfulnessCurve", "ImageParameterization", "METHODS", "RandomizationStep",
    "ReceptiveField", "as_input", "attention_maps", "attention_rollout", "attribute", "attribution_grid", "capture",
    "cascading_layers", "compare_stages", "deletion_insertion", "effective_receptive_field", "embed_2d",
    "feature_grid", "first_conv", "first_layer_filters", "format_receptive_fields", "layer_outputs",
    "maximize_activation", "model_randomization_test", "non_relu_activations", "normalize_map", "overlay_rgba",
    "plot_attention", "plot_deletion_insertion", "plot_embedding", "plot_feature_visualization",
    "plot_model_randomization", "plot_receptive_field", "pooled_features", "predicted_class", "randomize_module_",
    "receptive_fields", "resolve_layer", "show_overlay", "stage_or_layer_output", "stage_statistics",
    "strongest_channels", "to_image",
]

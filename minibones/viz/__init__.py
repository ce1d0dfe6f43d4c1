"""Seeing inside every backbone: activations, receptive fields, feature visualization,
embeddings and attributions, drawn one consistent way.

    >>> import minibones
    >>> from minibones import viz
    >>> model = minibones.create_model("resnet18")
    >>> [rf.size for rf in viz.receptive_fields(model)]
    [(7, 7), (43, 43), (99, 99), (211, 211), (435, 435)]

Modules, in the order of the course (notebooks 07 and 08):

* :mod:`~minibones.viz.activations`     - hooks, feature maps, first-layer filters, stage statistics,
                                          the patches that excite a channel most (Zeiler & Fergus 2014)
* :mod:`~minibones.viz.receptive_field` - analytic (Araujo et al. 2019) and effective (Luo et al. 2016) fields;
                                          :mod:`~minibones.viz.tracing` follows the forward pass for them
* :mod:`~minibones.viz.feature_vis`     - activation maximization (Olah et al. 2017)
* :mod:`~minibones.viz.embedding`       - PCA / t-SNE of pooled features, k-NN accuracy per stage
* :mod:`~minibones.viz.attribution`     - saliency, integrated gradients, occlusion, guided backprop, DeepLIFT...
                                          through captum, one map per method, methods x backbones
* :mod:`~minibones.viz.gradcam`         - Grad-CAM, once for maps and ViT tokens (also used by :mod:`minibones.parity`)
* :mod:`~minibones.viz.attention`       - ViT: the class token's attention and attention rollout
* :mod:`~minibones.viz.sanity`          - model randomization (Adebayo et al. 2018),
                                          deletion/insertion curves (Petsiuk et al. 2018)
* :mod:`~minibones.viz.display`         - the one display convention every figure uses

Every plotting function returns a matplotlib ``Figure``.
"""

from minibones.viz.activations import (
    Patch, UnitBank, capture, compare_stages, crop_field, feature_grid, first_conv, first_layer_filters,
    first_layer_statistics, input_shapes, layer_outputs, plot_top_patches, resolve_layer, stage_or_layer_output,
    stage_statistics, strongest_channels, strongest_units,
)
from minibones.viz.attention import attention_maps, attention_rollout, plot_attention
from minibones.viz.attribution import (
    DEFAULT_METHODS, METHODS, SIGNED_METHODS, Attribution, attribute, attribution_grid, guided_gradients,
    mass_inside, non_relu_activations, predicted_class, region_mask, top_classes, unguided_activations,
)
from minibones.viz.display import as_input, normalize_map, overlay_rgba, show_overlay, to_image
from minibones.viz.embedding import (
    embed_2d, knn_accuracy, plot_embedding, plot_feature_embedding, pooled_features, stage_features,
)
from minibones.viz.feature_vis import (
    ImageParameterization, Visualization, channel_response, maximize_activation, plot_feature_visualization,
    plot_visualizations, transform_robustly, visualize_channels,
)
from minibones.viz.gradcam import grad_cam
from minibones.viz.receptive_field import (
    ReceptiveField, effective_receptive_field, erf_extent, format_receptive_fields, plot_effective_receptive_fields,
    plot_receptive_field, receptive_fields,
)
from minibones.viz.sanity import (
    Faithfulness, FaithfulnessCurve, Randomization, RandomizationStep, Ranking, bootstrap_ranking, cascading_layers,
    deletion_insertion, faithfulness, model_randomization, model_randomization_test, perturbed_images,
    plot_deletion_insertion, plot_faithfulness, plot_model_randomization, plot_randomization_curves, randomize_module_,
)

__all__ = [
    # activations (notebook 07)
    "Patch", "UnitBank", "capture", "compare_stages", "crop_field", "feature_grid", "first_conv",
    "first_layer_filters", "first_layer_statistics", "input_shapes", "layer_outputs", "plot_top_patches",
    "resolve_layer", "stage_or_layer_output", "stage_statistics", "strongest_channels", "strongest_units",
    # attribution (notebook 08)
    "Attribution", "DEFAULT_METHODS", "METHODS", "SIGNED_METHODS", "attention_maps", "attention_rollout",
    "attribute", "attribution_grid", "guided_gradients", "mass_inside", "non_relu_activations", "plot_attention",
    "predicted_class", "region_mask", "top_classes", "unguided_activations", "grad_cam",
    # display
    "as_input", "normalize_map", "overlay_rgba", "show_overlay", "to_image",
    # embedding
    "embed_2d", "knn_accuracy", "plot_embedding", "plot_feature_embedding", "pooled_features", "stage_features",
    # feature visualization
    "ImageParameterization", "Visualization", "channel_response", "maximize_activation", "plot_feature_visualization",
    "plot_visualizations", "transform_robustly", "visualize_channels",
    # receptive fields
    "ReceptiveField", "effective_receptive_field", "erf_extent", "format_receptive_fields",
    "plot_effective_receptive_fields", "plot_receptive_field", "receptive_fields",
    # sanity checks
    "Faithfulness", "FaithfulnessCurve", "Randomization", "RandomizationStep", "Ranking", "bootstrap_ranking",
    "cascading_layers", "deletion_insertion", "faithfulness", "model_randomization", "model_randomization_test",
    "perturbed_images", "plot_deletion_insertion", "plot_faithfulness", "plot_model_randomization",
    "plot_randomization_curves", "randomize_module_",
]

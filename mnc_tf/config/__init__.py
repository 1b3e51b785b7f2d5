"""Configuration: the model's :class:`MNCConfig` tree and the experiment file around it.

* :mod:`mnc_tf.config.base` — the one loader / key checker / type coercer (``ConfigNode``);
* :mod:`mnc_tf.config.model` — ``MNCConfig`` and its sections (input, backbone_options, rpn,
  roi_sampling, heads, cascade, loss_weights, postprocess, optimizer);
* :mod:`mnc_tf.config.experiment` — ``ExperimentConfig`` (model / data / train) and
  ``load_config`` (YAML + ``--set`` overrides).
"""

from mnc_tf.config.base import ConfigNode, closest_key_error
from mnc_tf.config.experiment import (
    BACKBONE_NAMES,
    DATA_FORMATS,
    MIXED_PRECISION_POLICIES,
    STRATEGIES,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    ShapesConfig,
    TrainConfig,
    apply_overrides,
    load_config,
)
from mnc_tf.config.model import (
    LEGACY_KEYS,
    BackboneConfig,
    CascadeConfig,
    HeadsConfig,
    InputConfig,
    LossWeights,
    MNCConfig,
    OptimizerConfig,
    PostprocessConfig,
    ROISamplingConfig,
    RPNConfig,
    check_crop_pool_sizes,
)

__all__ = [
    "BACKBONE_NAMES",
    "DATA_FORMATS",
    "LEGACY_KEYS",
    "MIXED_PRECISION_POLICIES",
    "STRATEGIES",
    "BackboneConfig",
    "CascadeConfig",
    "ConfigNode",
    "DataConfig",
    "ExperimentConfig",
    "HeadsConfig",
    "InputConfig",
    "LossWeights",
    "MNCConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PostprocessConfig",
    "ROISamplingConfig",
    "RPNConfig",
    "ShapesConfig",
    "TrainConfig",
    "apply_overrides",
    "check_crop_pool_sizes",
    "closest_key_error",
    "load_config",
]

"""The experiment configuration (``model:`` / ``data:`` / ``train:``) — see :mod:`mnc_tf.config`.

Kept as the import path the training code, the examples and users have always used; the
definitions live in :mod:`mnc_tf.config.experiment` (one loader for every section).
"""

from mnc_tf.config import (  # noqa: F401 - re-exported
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
    closest_key_error,
    load_config,
)

"""The experiment configuration: one YAML file with ``model:``, ``data:`` and ``train:`` sections.

``model:`` is :class:`ModelConfig`: the :class:`~mnc_tf.config.MNCConfig` tree (``input``,
``backbone_options``, ``rpn``, ``roi_sampling``, ``heads``, ``cascade``, ``loss_weights``,
``postprocess``, ``optimizer``, ...) plus the arguments ``backbone``, ``num_stages`` and
``num_classes`` of ``mnc_tf.MNC``; ``data:`` is :class:`DataConfig` and ``train:`` is
:class:`TrainConfig`. Example (``load_config`` reads it)::

    model:
      backbone: vgg16
      num_stages: 5
      optimizer:
        total_steps: 40000
        learning_rate: 0.001
    data:
      format: coco
      train_annotations: /data/coco/annotations/instances_train2017.json
      train_images: /data/coco/train2017
    train:
      checkpoint_every: 1000

An unknown or mistyped key anywhere raises ``ValueError`` naming the key (dotted path) and the
closest valid key; a key of the flat model section from before the tree names its new place.
Overrides use dotted paths with values parsed as YAML and then coerced to the field's type::

    config = load_config("configs/shapes_tiny_mnc5.yaml", ["model.optimizer.total_steps=200"])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import yaml

from mnc_tf.config.base import ConfigNode, override_dict
from mnc_tf.config.model import LEGACY_KEYS, MNCConfig

# Backbone names ``mnc_tf.MNC`` builds (``mnc_tf.modeling.backbones.factory.BACKBONES``; repeated
# here so a config is checked without importing TensorFlow).
BACKBONE_NAMES = ("vgg16", "resnet50", "resnet101", "tiny")
DATA_FORMATS = ("coco", "sbd", "voc", "shapes")
MIXED_PRECISION_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")
SECTIONS = ("model", "data", "train")


@dataclasses.dataclass
class ModelConfig(MNCConfig):
    """The ``model:`` section: ``mnc_tf.MNC``'s constructor arguments and its ``MNCConfig``."""

    _aliases = {}
    _moved = LEGACY_KEYS

    backbone: str = "vgg16"
    num_stages: int = 5
    num_classes: int | None = None  # None: from the training data

    def validate(self):
        super().validate()
        if self.backbone not in BACKBONE_NAMES:
            raise ValueError(
                f"model.backbone: expected one of {', '.join(BACKBONE_NAMES)}, "
                f"got {self.backbone!r}."
            )
        if self.num_stages < 3 or self.num_stages % 2 == 0:
            raise ValueError(
                "model.num_stages: expected an odd number >= 3 (3 or 5 in the paper), got "
                f"{self.num_stages!r}."
            )
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"model.num_classes: expected >= 1, got {self.num_classes!r}.")

    def mnc_config(self) -> MNCConfig:
        """The :class:`MNCConfig` part (without the constructor arguments)."""
        return MNCConfig(**{name: getattr(self, name) for name in MNCConfig.field_names()})


@dataclasses.dataclass
class ShapesConfig(ConfigNode):
    """The synthetic shapes dataset generated on demand by ``data.format: shapes``.

    The train and the held-out ``val`` split are different images, so no held-out image is
    ever seen in training (``make_shapes_dataset``'s ``split`` streams are disjoint). Further
    ``options`` (``min_shapes``, ``max_shapes``, ``min_size``, ...) are passed to
    ``mnc_tf.data.make_shapes_dataset``.
    """

    dir: str = "data/shapes"
    num_train_images: int = 1000
    num_val_images: int = 100
    seed: int = 0
    image_size: int = 128
    num_classes: int = 3
    options: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class DataConfig(ConfigNode):
    """Where the images come from and how they are batched.

    ``format``: ``coco`` (COCO-format JSON + image folder — also what you use for your own
    data), ``sbd`` (SBD ``img/ inst/ cls/`` layout under ``root``), ``voc`` (VOC 2012
    ``SegmentationObject`` layout under ``root``) or ``shapes`` (synthetic, see
    :class:`ShapesConfig`). ``per_replica_batch_size`` images go to each replica; the global
    batch is that times the number of replicas. Image sizes are ``model.input``'s (the
    model's preprocessing). ``loader_options`` are passed unchanged to the loader function
    (for options this config does not name).
    """

    format: str = "coco"
    train_annotations: str | None = None
    train_images: str | None = None
    val_annotations: str | None = None
    val_images: str | None = None
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    shapes: ShapesConfig = dataclasses.field(default_factory=ShapesConfig)
    per_replica_batch_size: int = 1
    flip: bool = True
    cache: bool = False
    max_val_images: int | None = None
    loader_options: dict = dataclasses.field(default_factory=dict)

    def validate(self):
        if self.format not in DATA_FORMATS:
            raise ValueError(f"data.format must be one of {DATA_FORMATS}, got {self.format!r}.")
        if self.per_replica_batch_size < 1:
            raise ValueError(
                f"data.per_replica_batch_size must be >= 1, got {self.per_replica_batch_size}."
            )


@dataclasses.dataclass
class TrainConfig(ConfigNode):
    """How a run is driven: length, distribution, checkpoints, evaluation and logs.

    The optimiser is ``model.optimizer`` (part of the model's config, what ``MNC.compile()``
    builds). ``model.optimizer.learning_rate`` is the rate for a global batch of
    ``reference_batch_size`` images (the paper: 1e-3 for 8 GPUs × 1 image); with
    ``scale_learning_rate`` the optimizer runs at ``learning_rate × global_batch /
    reference_batch_size`` (linear scaling rule, logged at start; the saved model keeps the
    configured rate).

    A run has ``model.optimizer.total_steps`` optimizer steps; Keras epochs are
    ``steps_per_epoch`` steps (the unit of the progress bar and of evaluation, every
    ``eval_every_epochs`` epochs, 0 = never). Checkpoints every ``checkpoint_every`` steps (the
    last ``keep_checkpoints`` kept); a run started again with the same command resumes from the
    latest one. The best model by ``best_metric`` (``best_mode``) is saved as ``best.keras``.
    """

    steps_per_epoch: int = 1000
    reference_batch_size: int = 8
    scale_learning_rate: bool = True
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    eval_every_epochs: int = 1
    best_metric: str = "mAP_r@0.5"
    best_mode: str = "max"
    log_every: int = 20
    tensorboard_images: int = 4
    mixed_precision: str = "float32"
    strategy: str = "auto"
    seed: int = 0
    export_saved_model: bool = True
    verbose: str = "auto"

    def validate(self):
        for name in ("steps_per_epoch", "checkpoint_every", "reference_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}.")
        if self.keep_checkpoints < 1:
            raise ValueError(f"train.keep_checkpoints must be >= 1, got {self.keep_checkpoints}.")
        if self.mixed_precision not in MIXED_PRECISION_POLICIES:
            raise ValueError(
                f"train.mixed_precision must be one of {MIXED_PRECISION_POLICIES}, got "
                f"{self.mixed_precision!r}."
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(f"train.strategy must be one of {STRATEGIES}, got {self.strategy!r}.")
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"train.best_mode must be 'min' or 'max', got {self.best_mode!r}.")
        for name in ("eval_every_epochs", "log_every", "tensorboard_images"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}.")
        if self.verbose not in ("auto", "0", "1", "2"):
            raise ValueError(f"train.verbose must be auto, 0, 1 or 2, got {self.verbose!r}.")


@dataclasses.dataclass
class ExperimentConfig(ConfigNode):
    """A whole experiment: ``model``, ``data`` and ``train``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def mnc_config(self) -> MNCConfig:
        """The model's :class:`MNCConfig` (``model`` without the constructor arguments)."""
        return self.model.mnc_config()


def apply_overrides(d: dict, overrides: Iterable[str]) -> dict:
    """Apply ``section.key=value`` overrides (``--set``) to the experiment dict ``d`` (a copy).

    Values are parsed as YAML (``1e-3`` → float, ``[1, 2]`` → list, ``null`` → None) and
    coerced to the type of the field they set; the key path is checked against the tree.
    """
    return override_dict(ExperimentConfig, d, overrides)


def load_config(path: str | None = None, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read a YAML experiment config, apply ``overrides`` and validate.

    Args:
      path: YAML file, or ``None`` for the defaults.
      overrides: ``"section.key=value"`` strings (the CLI's ``--set``), e.g.
        ``"model.optimizer.total_steps=300"``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: unknown keys (with the closest valid key), wrong types or values.
    """
    d = {}
    if path is not None:
        with open(path) as f:
            try:
                d = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
                problem = getattr(e, "problem", None) or str(e).splitlines()[0]
                raise ValueError(f"Config file {path} is not valid YAML: {problem}{where}") from e
        if not isinstance(d, dict):
            raise ValueError(f"Config file {path} must hold a mapping, got {type(d).__name__}.")
    d = apply_overrides(d, overrides)
    return ExperimentConfig.from_dict(d)

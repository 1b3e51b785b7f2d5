"""The experiment configuration: one YAML file with ``model:``, ``data:`` and ``train:`` sections.

``model:`` holds the :class:`mnc_tf.config.MNCConfig` fields (validated by its ``from_dict``) plus
the constructor arguments ``backbone``, ``num_stages`` and ``num_classes`` of ``mnc_tf.MNC``;
``data:`` is :class:`DataConfig` and ``train:`` is :class:`TrainConfig`. Example::

    model:
      backbone: vgg16
      num_stages: 5
    data:
      format: coco
      train_annotations: /data/coco/annotations/instances_train2017.json
      train_images: /data/coco/train2017
      total_steps: 40000        # MNCConfig fields, the optimiser included
      learning_rate: 0.001
    train:
      checkpoint_every: 1000

An unknown or mistyped key anywhere raises ``ValueError`` naming the key (dotted path) and the
closest valid key. Overrides use dotted paths with values parsed as YAML and then coerced to the
field's type::

    config = load_config("configs/shapes_tiny_mnc5.yaml", ["model.total_steps=200"])
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

# Arguments of ``mnc_tf.MNC(...)`` that live in the ``model:`` section next to the MNCConfig fields.
MODEL_CONSTRUCTOR_KEYS = {
    "backbone": str,
    "num_stages": int,
    "num_classes": typing.Optional[int],  # noqa: UP045 - used as a runtime type hint
}
# Backbone names ``mnc_tf.MNC`` builds (``mnc_tf.modeling.backbones.factory.BACKBONES``; repeated
# here so a config is checked without importing TensorFlow).
BACKBONE_NAMES = ("vgg16", "resnet50", "resnet101", "tiny")
DATA_FORMATS = ("coco", "sbd", "voc", "shapes")
MIXED_PRECISION_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")


def closest_key_error(key: str, valid: Iterable[str], section: str = "") -> ValueError:
    """A ``ValueError`` naming an unknown ``key`` and the closest of ``valid`` (difflib)."""
    valid = sorted(valid)
    full = f"{section}.{key}" if section else key
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" Did you mean '{section + '.' if section else ''}{close[0]}'?" if close else ""
    where = f" of {section}" if section else ""
    listing = ", ".join(valid) if len(valid) <= 30 else f"{len(valid)} keys, see the docs"
    return ValueError(f"Unknown config key '{full}'.{hint} Valid keys{where}: {listing}.")


@dataclasses.dataclass
class ShapesConfig:
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
class DataConfig:
    """Where the images come from and how they are preprocessed.

    ``format``: ``coco`` (COCO-format JSON + image folder — also what you use for your own
    data), ``sbd`` (SBD ``img/ inst/ cls/`` layout under ``root``), ``voc`` (VOC 2012
    ``SegmentationObject`` layout under ``root``) or ``shapes`` (synthetic, see
    :class:`ShapesConfig`). ``per_replica_batch_size`` images go to each replica; the global
    batch is that times the number of replicas. ``loader_options`` are passed unchanged to the
    loader function (for options this config does not name).
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
class TrainConfig:
    """How a run is driven: length, distribution, checkpoints, evaluation and logs.

    The optimiser itself (``optimizer``, ``learning_rate``, ``momentum``, ``weight_decay``,
    ``total_steps``, ``lr_drop_fraction``, ``warmup_steps``, ``clipnorm``) is part of
    ``MNCConfig`` and lives in the ``model:`` section, so one dataclass holds every
    hyper-parameter. ``model.learning_rate`` is the rate for a global batch of
    ``reference_batch_size`` images (the paper: 1e-3 for 8 GPUs × 1 image); with
    ``scale_learning_rate`` the rate used is ``learning_rate × global_batch /
    reference_batch_size`` (linear scaling rule), logged at start.

    A run has ``model.total_steps`` optimizer steps; Keras epochs are ``steps_per_epoch`` steps
    (the unit of the progress bar and of evaluation, every ``eval_every_epochs`` epochs, 0 =
    never). Checkpoints every ``checkpoint_every`` steps (the last ``keep_checkpoints`` kept); a
    run started again with the same command resumes from the latest one. The best model by
    ``best_metric`` (``best_mode``) is saved as ``best.keras``.
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
class ExperimentConfig:
    """A whole experiment: ``model`` (dict of MNC arguments), ``data`` and ``train``."""

    model: dict = dataclasses.field(default_factory=dict)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, d: Mapping | None) -> ExperimentConfig:
        """Build and validate from a nested dict (as read from YAML)."""
        d = dict(d or {})
        for key in d:
            if key not in ("model", "data", "train"):
                raise closest_key_error(key, ("model", "data", "train"))
        if not isinstance(d.get("model") or {}, Mapping):
            raise ValueError(
                f"Config section 'model' must be a mapping, got {type(d['model']).__name__}."
            )
        model = validate_model_section(dict(d.get("model") or {}))
        cfg = cls(
            model=model,
            data=_dataclass_from_dict(DataConfig, d.get("data") or {}, "data"),
            train=_dataclass_from_dict(TrainConfig, d.get("train") or {}, "train"),
        )
        cfg.data.validate()
        cfg.train.validate()
        return cfg

    def to_dict(self) -> dict:
        """Plain nested dict (YAML-serialisable: tuples become lists)."""
        return _plain(
            {
                "model": dict(self.model),
                "data": dataclasses.asdict(self.data),
                "train": dataclasses.asdict(self.train),
            }
        )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def mnc_config(self):
        """The ``mnc_tf.config.MNCConfig`` of the ``model`` section (constructor keys removed)."""
        from mnc_tf.config import MNCConfig

        fields = {f.name for f in dataclasses.fields(MNCConfig)}
        return MNCConfig.from_dict(
            {k: v for k, v in self.model.items() if k not in MODEL_CONSTRUCTOR_KEYS or k in fields}
        )


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _mnc_field_types() -> dict[str, Any]:
    from mnc_tf.config import MNCConfig

    hints = typing.get_type_hints(MNCConfig)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(MNCConfig)}


def model_field_types() -> dict[str, Any]:
    """Valid ``model:`` keys → their types (MNCConfig fields plus the MNC constructor keys)."""
    types_ = dict(MODEL_CONSTRUCTOR_KEYS)
    types_.update(_mnc_field_types())
    return types_


def validate_model_section(model: Mapping) -> dict:
    """Check the ``model:`` section; returns it with values coerced to the fields' types.

    Raises ``ValueError`` naming the key for an unknown key, a value of the wrong type
    (``learning_rate: fast``, ``anchor_scales: 4.0``), an unknown backbone, a stage count
    the cascade cannot build, or a value :class:`MNCConfig` rejects — all before any data or
    model is built.
    """
    from mnc_tf.config import MNCConfig

    valid = model_field_types()
    for key in model:
        if key not in valid:
            raise closest_key_error(key, valid, "model")
    model = {
        key: _coerce(value, valid[key], f"model.{key}", strict=True) for key, value in model.items()
    }
    backbone = model.get("backbone", "vgg16")
    if backbone not in BACKBONE_NAMES:
        raise ValueError(
            f"model.backbone: expected one of {', '.join(BACKBONE_NAMES)}, got {backbone!r}."
        )
    num_stages = model.get("num_stages", 5)
    if num_stages < 3 or num_stages % 2 == 0:
        raise ValueError(
            f"model.num_stages: expected an odd number >= 3 (3 or 5 in the paper), got "
            f"{num_stages!r}."
        )
    if model.get("num_classes") is not None and model["num_classes"] < 1:
        raise ValueError(f"model.num_classes: expected >= 1, got {model['num_classes']!r}.")
    fields = _mnc_field_types()
    try:
        MNCConfig.from_dict({k: v for k, v in model.items() if k in fields})
    except (TypeError, ValueError) as e:
        raise ValueError(f"Invalid model section: {e}") from e
    return model


def _dataclass_from_dict(cls, d: Mapping, section: str):
    if not isinstance(d, Mapping):
        raise ValueError(f"Config section '{section}' must be a mapping, got {type(d).__name__}.")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in d.items():
        if key not in names:
            raise closest_key_error(key, names, section)
        typ = hints[key]
        path = f"{section}.{key}"
        if dataclasses.is_dataclass(typ):
            kwargs[key] = _dataclass_from_dict(typ, value or {}, path)
        else:
            kwargs[key] = _coerce(value, typ, path, strict=True)
    return cls(**kwargs)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _coerce(value, typ, path, strict=False):
    """Convert ``value`` to ``typ`` (YAML scalars or strings from ``--set``) or raise ValueError.

    ``strict`` (YAML input) still accepts ints for floats and lists for tuples, but never parses
    a string as a number: a quoted number in a YAML file is more likely a mistake than intended.
    """
    if typ is Any:
        return value
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        ):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path, strict)
            except ValueError:
                pass
        raise ValueError(f"{path}: cannot use {value!r} as {_type_name(typ)}.")
    if typing.get_origin(typ) is typing.Literal:
        if value in args:
            return value
        raise ValueError(f"{path}: must be one of {args}, got {value!r}.")
    if typ is bool:
        if isinstance(value, bool):
            return value
        if not strict and isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError(f"{path}: expected true/false, got {value!r}.")
    if typ is int:
        if isinstance(value, bool):
            raise ValueError(f"{path}: expected an integer, got {value!r}.")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not strict and isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
        raise ValueError(f"{path}: expected an integer, got {value!r}.")
    if typ is float:
        if isinstance(value, bool):
            raise ValueError(f"{path}: expected a number, got {value!r}.")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            # PyYAML reads "1e-3" (no dot) as a string; accept it even from files.
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{path}: expected a number, got {value!r}.")
    if typ is str:
        if isinstance(value, str):
            return value
        if not strict and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{path}: expected a string, got {value!r}.")
    if typ in (list, tuple) or origin in (list, tuple):
        if isinstance(value, str) and not strict:
            items = [v for v in (s.strip() for s in value.split(",")) if v]
            try:
                value = [yaml.safe_load(v) for v in items]
            except yaml.YAMLError:
                raise ValueError(
                    f"{path}: expected a list like [1, 2] or 1,2, got {value!r}."
                ) from None
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{path}: expected a list, got {value!r}.")
        container = tuple if (typ is tuple or origin is tuple) else list
        if args and not (len(args) == 2 and args[1] is Ellipsis) and container is tuple:
            if len(args) != len(value):
                raise ValueError(f"{path}: expected {len(args)} values, got {value!r}.")
            return tuple(_coerce(v, a, path, strict) for v, a in zip(value, args, strict=True))
        elem = args[0] if args else Any
        return container(_coerce(v, elem, path, strict) for v in value)
    if typ is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError(f"{path}: expected a mapping, got {value!r}.")
        return dict(value)
    if dataclasses.is_dataclass(typ):
        raise ValueError(f"{path}: is a section; set its keys, e.g. {path}.<key>=<value>.")
    if isinstance(typ, type) and isinstance(value, typ):
        return value
    raise ValueError(f"{path}: cannot use {value!r} as {_type_name(typ)}.")


def _type_name(typ) -> str:
    return getattr(typ, "__name__", None) or str(typ).replace("typing.", "")


def apply_overrides(d: dict, overrides: Iterable[str]) -> dict:
    """Apply ``key.sub=value`` overrides to the nested dict ``d`` (a copy is returned).

    Values are parsed as YAML (``1e-3`` → float, ``[1, 2]`` → list, ``null`` → None) and coerced
    to the type of the field they set; the key path is checked against the config's fields.
    """
    import copy

    d = copy.deepcopy(d)
    for item in overrides:
        if "=" not in item:
            raise ValueError(
                f"--set {item}: must look like 'section.key=value', e.g. model.total_steps=100."
            )
        path, raw = item.split("=", 1)
        path = path.strip()
        parts = path.split(".")
        if len(parts) < 2 or not all(parts):
            raise ValueError(
                f"--set {path}: must name a section and a key, e.g. 'model.total_steps'."
            )
        if parts[0] not in ("model", "data", "train"):
            raise ValueError(
                f"--set {path}: {closest_key_error(parts[0], ('model', 'data', 'train'))}"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            if raw.lstrip().startswith(("[", "{", "'", '"')):
                reason = str(e).splitlines()[0]
                raise ValueError(
                    f"--set {path}: expected a YAML value (a list like [4, 8]), got {raw!r} "
                    f"({reason})."
                ) from None
            value = raw  # e.g. a path with characters YAML reserves
        try:
            typ = _override_type(parts, path)
            value = _coerce(value, typ, path, strict=False)
        except ValueError as e:
            text = str(e)
            message = f"--set {text}" if text.startswith(path) else f"--set {path}: {text}"
            raise ValueError(message) from None
        node = d
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return d


def _override_type(parts: list[str], path: str):
    section = parts[0]
    if section == "model":
        valid = model_field_types()
        if parts[1] not in valid:
            raise closest_key_error(parts[1], valid, "model")
        if len(parts) > 2:
            raise ValueError(f"Override key {path!r}: model.{parts[1]} has no sub-keys.")
        return valid[parts[1]]
    cls = DataConfig if section == "data" else TrainConfig
    prefix = section
    typ = cls
    for i, p in enumerate(parts[1:], start=1):
        if not dataclasses.is_dataclass(typ):
            if typ is dict or typing.get_origin(typ) is dict:
                return Any  # free-form options: any YAML value, one level deep per key
            raise ValueError(f"Override key {path!r}: {prefix} has no sub-keys.")
        hints = typing.get_type_hints(typ)
        names = {f.name for f in dataclasses.fields(typ)}
        if p not in names:
            raise closest_key_error(p, names, prefix)
        typ = hints[p]
        prefix = ".".join(parts[: i + 1])
    return typ


def load_config(path: str | None = None, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read a YAML experiment config, apply ``overrides`` and validate.

    Args:
      path: YAML file, or ``None`` for the defaults.
      overrides: ``"section.key=value"`` strings (the CLI's ``--set``).

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

"""Run the serving pipeline on image files, from an exported SavedModel or a ``.keras`` model.

Both sources give the same outputs (those of :mod:`mnc_tf.export.serving`): a SavedModel is
loaded with plain ``tf.saved_model.load`` (no ``mnc_tf`` op library needed); a ``.keras``
model is wrapped in the same serving functions in-process, using the fastest RoI warping
implementation available. Used by ``mnc-predict``; handy in notebooks::

    predictor = Predictor.from_path("export/")          # or "model.keras"
    det = predictor.predict(open("cat.jpg", "rb").read())
    det["detection_boxes"]   # [n, 4] y1, x1, y2, x2 in the pixels of cat.jpg
"""

import json
import os
import types

import tensorflow as tf

from mnc_tf.export.serving import INFO_FILENAME, LABELS_FILENAME, latest_version_dir
from mnc_tf.export.signatures import (
    INFER_FUNCTION,
    SIGNATURE_ENCODED,
    build_serving_functions,
    label_map,
    model_settings,
)

_DETECTION_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "detection_masks")


def read_labels(path):
    """``assets/labels.txt`` of an export → ``{category_id: class_name}``.

    Each line is ``<category_id>\\t<class name>`` (see :mod:`mnc_tf.export.serving`).
    """
    labels = {}
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            category_id, sep, name = line.partition("\t")
            if not sep or not category_id.strip().lstrip("-").isdigit():
                raise ValueError(
                    f"{path}:{line_number}: expected '<category_id>\\t<name>', got {line!r}"
                )
            labels[int(category_id)] = name
    return labels


def load_keras_model(path):
    """Load an MNC ``.keras`` file (registers the mnc_tf classes first).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: ``path`` is not a loadable ``.keras`` model; the message names it.
    """
    import keras

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model: no such file: {path}")
    if not path.endswith(".keras") or not os.path.isfile(path):
        raise ValueError(f"model: expected a .keras file, got {path}")
    import mnc_tf.modeling.mnc  # noqa: F401  (registers MNC and its layers with Keras)

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001  (any failure means: not a usable model file)
        raise ValueError(f"model: could not load {path} as a Keras model: {_first_line(e)}") from e


def load_exported_model(path):
    """An export written by :func:`mnc_tf.export.export_serving`, as a callable MNC model.

    Args:
      path: a SavedModel version directory or a TF Serving base directory (its highest
        integer version is used).

    Returns:
      An :class:`ExportedModel`.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: ``path`` holds no SavedModel, or one without the ``infer`` function (not
        written by this version of ``mnc-export``); the message names ``path``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model: no such file or directory: {path}")
    version_dir = _version_dir(path)
    loaded = _load_saved_model(version_dir)
    if not hasattr(loaded, INFER_FUNCTION):
        raise ValueError(
            f"model: the SavedModel in {version_dir} has no {INFER_FUNCTION!r} function; "
            "re-export it with this version's mnc-export (or pass the .keras file)"
        )
    info = _read_info(version_dir)
    return ExportedModel(loaded, version_dir, info)


def _version_dir(path):
    """A SavedModel version directory, or a TF Serving base directory's highest version."""
    try:
        return latest_version_dir(path)
    except FileNotFoundError as e:
        raise ValueError(f"model: {e}") from None


def _load_saved_model(version_dir):
    try:
        return tf.saved_model.load(version_dir)
    except Exception as e:  # noqa: BLE001  (corrupt / foreign files: report, don't crash)
        raise ValueError(
            f"model: could not load the SavedModel in {version_dir}: {_first_line(e)}"
        ) from e


def _read_info(version_dir):
    info_path = os.path.join(version_dir, "assets", INFO_FILENAME)
    if not os.path.isfile(info_path):
        return {}
    with open(info_path, encoding="utf-8") as f:
        return json.load(f)


class ExportedModel:
    """The model inside an export, called like the Keras MNC (``mnc-eval --model export/``).

    ``model(features, training=False)`` takes ``features["images"]`` ``[B, H, W, 3]`` (uint8
    or float, 0..255, already resized and padded as by :func:`mnc_tf.data.coco_dataset`) and
    ``features["image_info"]`` float32 ``[B, 4, 2]``, and returns the CONTRACTS.md outputs
    (``boxes`` in resized-image pixels, contiguous ``classes``, ``scores``, ``masks``,
    ``num_detections``), computed by the export's ``infer`` function (the same weights and
    stock-op graph the serving signatures use).

    Attributes:
      preprocessing: ``short_side`` / ``max_side``, the resize the export was made with (as
        ``model.preprocessing`` of an MNC model).
      config: what ``assets/export_info.json`` records, laid out as an MNC model's config:
        ``input.short_side`` / ``input.max_side``, ``heads.mask_size``,
        ``postprocess.mask_threshold`` / ``postprocess.predict_score_threshold`` (``None``
        where an export does not record one).
      class_names, category_ids, num_classes: the label map (``[label - 1]``).
      source: the version directory.
    """

    def __init__(self, loaded, version_dir, info):
        self._loaded = loaded  # keeps the restored variables alive
        self._infer = getattr(loaded, INFER_FUNCTION)
        self.source = version_dir
        self.class_names = list(info.get("class_names") or [])
        self.category_ids = list(info.get("category_ids") or [])
        self.num_classes = len(self.class_names) or len(self.category_ids) or None
        short_side, max_side = info.get("short_side"), info.get("max_side")
        mask_threshold, score_threshold = info.get("mask_threshold"), info.get("score_threshold")
        self.preprocessing = types.SimpleNamespace(short_side=short_side, max_side=max_side)
        self.config = types.SimpleNamespace(
            input=types.SimpleNamespace(short_side=short_side, max_side=max_side),
            heads=types.SimpleNamespace(mask_size=info.get("mask_size")),
            postprocess=types.SimpleNamespace(
                mask_threshold=mask_threshold, predict_score_threshold=score_threshold
            ),
        )

    def __call__(self, features, training=False):
        if training:
            raise ValueError("training: an exported model only runs inference (training=False)")
        return self._infer(
            {
                "images": tf.cast(features["images"], tf.float32),
                "image_info": tf.cast(features["image_info"], tf.float32),
            }
        )


def _config_defaults():
    """The thresholds of a default :class:`mnc_tf.MNCConfig` (for exports that predate
    recording them in ``export_info.json``)."""
    from mnc_tf.config import MNCConfig

    config = MNCConfig()
    return {
        "mask_threshold": config.postprocess.mask_threshold,
        "score_threshold": config.postprocess.predict_score_threshold,
    }


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class Predictor:
    """The ``serving_default`` pipeline (encoded image bytes in) bound to a model.

    Make one with :meth:`from_path` (or :meth:`from_saved_model` / :meth:`from_keras_model`),
    which take the thresholds from the model or the export.

    Attributes:
      labels: ``{category_id: class_name}``.
      mask_threshold: binarisation threshold for pasted masks (the model's
        ``config.postprocess.mask_threshold``, as recorded in ``export_info.json``).
      score_threshold: the model's threshold for detections to draw / write
        (``config.postprocess.predict_score_threshold``).
      source: the loaded path.
    """

    def __init__(self, serving_fn, labels, mask_threshold, source=None, *, score_threshold):
        self._fn = serving_fn
        self.labels = dict(labels)
        self.mask_threshold = float(mask_threshold)
        self.score_threshold = float(score_threshold)
        self.source = source

    @classmethod
    def from_path(cls, path):
        """A ``.keras`` file, a SavedModel version dir, or a TF Serving base dir (its latest
        version). Raises ``FileNotFoundError`` / ``ValueError`` naming ``path``."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"model: no such file or directory: {path}")
        if os.path.isfile(path):
            return cls.from_keras_model(load_keras_model(path), source=path)
        return cls.from_saved_model(_version_dir(path))

    @classmethod
    def from_saved_model(cls, version_dir):
        loaded = _load_saved_model(version_dir)
        if SIGNATURE_ENCODED not in loaded.signatures:
            raise ValueError(
                f"model: {version_dir} has no {SIGNATURE_ENCODED!r} signature (signatures: "
                f"{sorted(loaded.signatures)}); was it written by mnc-export?"
            )
        assets = os.path.join(version_dir, "assets")
        labels_path = os.path.join(assets, LABELS_FILENAME)
        labels = read_labels(labels_path) if os.path.isfile(labels_path) else {}
        info = _read_info(version_dir)
        # An export that does not record a threshold was made with the config defaults.
        defaults = _config_defaults()
        predictor = cls(
            loaded.signatures[SIGNATURE_ENCODED],
            labels,
            info.get("mask_threshold", defaults["mask_threshold"]),
            version_dir,
            score_threshold=info.get("score_threshold", defaults["score_threshold"]),
        )
        predictor._loaded = loaded  # keeps the restored variables alive
        return predictor

    @classmethod
    def from_keras_model(cls, model, source=None):
        fn = build_serving_functions(model)[SIGNATURE_ENCODED]
        category_ids, class_names = label_map(model)
        settings = model_settings(model)
        labels = dict(zip(category_ids, class_names, strict=True))
        return cls(
            fn,
            labels,
            settings["mask_threshold"],
            source,
            score_threshold=settings["score_threshold"],
        )

    def predict(self, encoded):
        """Detections for one encoded image (JPEG / PNG / GIF / BMP bytes).

        Returns:
          dict of NumPy arrays, valid rows only (``n = num_detections``):
          ``detection_boxes [n, 4]`` (original pixels), ``detection_scores [n]``,
          ``detection_classes [n]`` (category ids), ``detection_masks [n, m, m]``,
          ``num_detections`` (int), ``image_info [4, 2]``.

        Raises:
          tf.errors.InvalidArgumentError: ``encoded`` is not a decodable image.
        """
        out = self._fn(images=tf.constant([encoded], tf.string))
        n = int(out["num_detections"][0])
        result = {key: out[key][0, :n].numpy() for key in _DETECTION_KEYS}
        result["num_detections"] = n
        result["image_info"] = out["image_info"][0].numpy()
        return result

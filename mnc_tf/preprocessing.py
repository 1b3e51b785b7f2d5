"""The model's input preprocessing: resize one image the MNC way, normalise a batch of pixels.

:class:`Preprocessing` is a Keras layer saved with the model (``model.preprocessing``, built
from ``MNCConfig.input``). Everything that feeds the model uses it, so training, evaluation,
prediction, export and the examples see the same pixels:

* ``preprocessing.resize(image)`` — shorter side → ``short_side``, longer ≤ ``max_side``,
  bilinear, half-pixel centres, no antialiasing (TF Model Garden's resize) → ``(image,
  image_info)``; the tf.data pipelines, ``mnc-eval``, ``mnc-predict``, the SavedModel's
  serving function and the examples call it (or :func:`resize_image`, the same function);
* ``preprocessing(images)`` — 0..255 RGB → the backbone's convention (``"caffe"``: RGB→BGR
  minus the ImageNet means, ``"scale"``: ``x / 127.5 - 1``, ``"none"``); the first op of
  ``MNC.call``.

``image_info`` rows (float32 ``[4, 2]``): original ``(h, w)``, resized ``(h, w)``, scale
``(sy, sx)``, zeros.
"""

from __future__ import annotations

import keras
import tensorflow as tf

NORMALIZATION_MODES = ("caffe", "scale", "none")
# keras.applications' "caffe" preprocessing: BGR order, ImageNet channel means subtracted.
CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)


def scaled_size(height, width, short_side, max_side, max_size=None):
    """Size after resizing the shorter side to ``short_side`` with the longer ≤ ``max_side``.

    Args:
      height, width: original size (int or scalar tensors).
      short_side, max_side: target sides (python or scalar tensors; may be jittered floats).
      max_size: optional ``(H_max, W_max)``: the scale is further reduced so the result fits
        (the pipeline passes its padded size, so a jittered image always fits the pad).

    Returns:
      ``(new_h, new_w)`` int32 scalars, ``round(h · s)``, ``round(w · s)``, each ≥ 1.
    """
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    short_side = tf.cast(short_side, tf.float32)
    max_side = tf.cast(max_side, tf.float32)
    scale = tf.minimum(short_side / tf.minimum(h, w), max_side / tf.maximum(h, w))
    if max_size is not None:
        cap_h = tf.cast(max_size[0], tf.float32)
        cap_w = tf.cast(max_size[1], tf.float32)
        scale = tf.minimum(scale, tf.minimum(cap_h / h, cap_w / w))
    new_h = tf.maximum(tf.round(h * scale), 1.0)
    new_w = tf.maximum(tf.round(w * scale), 1.0)
    if max_size is not None:
        # Rounding can overshoot the cap by one pixel.
        new_h = tf.minimum(new_h, cap_h)
        new_w = tf.minimum(new_w, cap_w)
    return tf.cast(new_h, tf.int32), tf.cast(new_w, tf.int32)


def image_info(original_size, resized_size):
    """``[4, 2]`` float32 image_info from ``(h, w)`` before and after resizing."""
    orig = tf.cast(tf.stack(original_size), tf.float32)
    new = tf.cast(tf.stack(resized_size), tf.float32)
    return tf.stack([orig, new, new / orig, tf.zeros([2], tf.float32)])


def to_rgb(image, arg_name="image"):
    """Static-shape check and 1/4-channel → 3-channel conversion of one ``[H, W, C]`` image."""
    image = tf.convert_to_tensor(image)
    if image.shape.rank is not None and image.shape.rank != 3:
        raise ValueError(
            f"{arg_name} must be [H, W, C] (one image), got shape {image.shape.as_list()}"
        )
    channels = image.shape[-1]
    if channels == 1:
        image = tf.tile(image, [1, 1, 3])
    elif channels == 4:
        image = image[..., :3]  # drop alpha
    elif channels is not None and channels != 3:
        raise ValueError(f"{arg_name} must have 1, 3 or 4 channels, got {channels}")
    return image


def resize_image(image, short_side=600, max_side=1000, max_size=None):
    """Resize one image the MNC way (shorter side → ``short_side``, longer ≤ ``max_side``).

    Bilinear (half-pixel centres, no antialiasing, as TF Model Garden), no normalisation.

    Args:
      image: uint8 or float ``[H, W, C]`` RGB 0..255; ``C`` = 1 (tiled) or 4 (alpha dropped)
        is accepted too.
      short_side, max_side: target sides.
      max_size: optional ``(H_max, W_max)`` the result must fit in (see :func:`scaled_size`).

    Returns:
      ``(image, image_info)``: float32 ``[h, w, 3]`` and float32 ``[4, 2]``.
    """
    image = to_rgb(image)
    shape = tf.shape(image)
    new_h, new_w = scaled_size(shape[0], shape[1], short_side, max_side, max_size)
    resized = tf.image.resize(tf.cast(image, tf.float32), tf.stack([new_h, new_w]))
    return resized, image_info((shape[0], shape[1]), (new_h, new_w))


def normalize_pixels(images, mode):
    """0..255 RGB → the backbone's input convention (float32), see the module docstring."""
    if mode not in NORMALIZATION_MODES:
        raise ValueError(f"normalization mode must be one of {NORMALIZATION_MODES}, got {mode!r}")
    images = tf.cast(images, tf.float32)
    if mode == "caffe":
        return images[..., ::-1] - tf.constant(CAFFE_BGR_MEANS, tf.float32)
    if mode == "scale":
        return images / 127.5 - 1.0
    return images


@keras.saving.register_keras_serializable(package="mnc_tf")
class Preprocessing(keras.layers.Layer):
    """Resize sides and pixel normalisation of a model, as one serialisable layer.

    Args:
      short_side, max_side: the resize of :func:`resize_image`.
      normalization: ``"caffe"``, ``"scale"`` or ``"none"`` (resolved: the backbone's default
        has been applied by the model builder).

    ``call(images)`` normalises a ``[B, H, W, 3]`` batch (float32 out); ``resize(image)``
    resizes one ``[H, W, C]`` image → ``(image, image_info)``.
    """

    def __init__(self, short_side=600, max_side=1000, normalization="none", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if normalization not in NORMALIZATION_MODES:
            raise ValueError(
                f"normalization must be one of {NORMALIZATION_MODES}, got {normalization!r}"
            )
        if int(short_side) < 1 or int(max_side) < int(short_side):
            raise ValueError(
                f"need 1 <= short_side <= max_side, got short_side={short_side!r}, "
                f"max_side={max_side!r}"
            )
        self.short_side = int(short_side)
        self.max_side = int(max_side)
        self.normalization = normalization

    @property
    def mode(self):  # the name ImageNormalization used
        return self.normalization

    def resize(self, image, max_size=None):
        """One image → ``(float32 [h, w, 3], image_info [4, 2])`` at this model's sides."""
        return resize_image(image, self.short_side, self.max_side, max_size)

    def call(self, images):
        return normalize_pixels(images, self.normalization)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            short_side=self.short_side,
            max_side=self.max_side,
            normalization=self.normalization,
        )
        return config

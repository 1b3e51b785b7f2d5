"""Stage 1 head: the Region Proposal Network's 3×3 conv and its two 1×1 sibling outputs."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mnc_tf")
class RPNHead(keras.layers.Layer):
    """3×3 conv (``filters``, ReLU) → objectness logits (A) and box deltas (4·A) per cell.

    The paper's 2-way softmax per anchor is written as one sigmoid logit (the same model:
    ``softmax([a, b])[1] == sigmoid(b - a)``).

    Call: ``features [B, h, w, C]`` → ``(logits [B, h·w·A] float32,
    deltas [B, h·w·A, 4] float32 (dy, dx, dh, dw))``, anchors ordered as
    :func:`mnc_tf.modeling.anchors.grid_anchors`.
    """

    def __init__(self, num_anchors, filters=512, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = int(num_anchors)
        self.filters = int(filters)
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.conv = keras.layers.Conv2D(
            self.filters,
            3,
            padding="same",
            activation="relu",
            kernel_initializer=init,
            name="conv",
        )
        self.cls = keras.layers.Conv2D(self.num_anchors, 1, kernel_initializer=init, name="cls")
        self.box = keras.layers.Conv2D(4 * self.num_anchors, 1, kernel_initializer=init, name="box")

    def build(self, input_shape):
        self.conv.build(input_shape)
        hidden = tuple(input_shape[:-1]) + (self.filters,)
        self.cls.build(hidden)
        self.box.build(hidden)
        self.built = True

    def call(self, features):
        x = self.conv(features)
        logits = tf.cast(self.cls(x), tf.float32)
        deltas = tf.cast(self.box(x), tf.float32)
        batch = tf.shape(features)[0]
        return tf.reshape(logits, [batch, -1]), tf.reshape(deltas, [batch, -1, 4])

    @property
    def box_kernel(self):
        """The box-regression kernel (the end-to-end gradient target of the paper)."""
        return self.box.kernel

    def get_config(self):
        config = super().get_config()
        config.update(num_anchors=self.num_anchors, filters=self.filters)
        return config

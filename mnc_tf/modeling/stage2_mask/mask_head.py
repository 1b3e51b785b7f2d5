"""Stage 2 head: class-agnostic ``m × m`` masks from RoI-warped features."""

import keras
import tensorflow as tf

from mnc_tf.layers.dense import HeadDense


@keras.saving.register_keras_serializable(package="mnc_tf")
class MaskHead(keras.layers.Layer):
    """fc ``fc_dim`` + ReLU → fc ``m·m`` (logits of the per-pixel sigmoid), as in the paper.

    Call: ``roi_features [R, S, S, C]`` (the RoI-warped, pooled features) →
    mask logits float32 ``[R, m, m]``; apply ``sigmoid`` for probabilities.
    """

    def __init__(self, mask_size=28, fc_dim=256, **kwargs):
        super().__init__(**kwargs)
        self.mask_size = int(mask_size)
        self.fc_dim = int(fc_dim)
        self.flatten = keras.layers.Flatten(name="flatten")
        self.fc = HeadDense(self.fc_dim, activation="relu", name="fc")
        self.pred = HeadDense(
            self.mask_size * self.mask_size,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            name="mask_pred",
        )

    def build(self, input_shape):
        flat = 1
        for d in input_shape[1:]:
            flat *= int(d)
        self.fc.build((None, flat))
        self.pred.build((None, self.fc_dim))
        self.built = True

    def call(self, roi_features):
        x = self.fc(self.flatten(roi_features))
        logits = tf.cast(self.pred(x), tf.float32)
        return tf.reshape(logits, [-1, self.mask_size, self.mask_size])

    def get_config(self):
        config = super().get_config()
        config.update(mask_size=self.mask_size, fc_dim=self.fc_dim)
        return config

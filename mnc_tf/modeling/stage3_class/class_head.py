"""Stage 3 head: categorise each instance from a box pathway and a mask pathway."""

import keras
import tensorflow as tf

from mnc_tf.layers.dense import HeadDense


def _pathway(name, fc_dim, pool):
    layers = []
    if pool > 1:
        layers.append(keras.layers.MaxPooling2D(pool, name=f"{name}_pool"))
    layers += [
        keras.layers.Flatten(name=f"{name}_flatten"),
        HeadDense(fc_dim, activation="relu", name=f"{name}_fc1"),
        HeadDense(fc_dim, activation="relu", name=f"{name}_fc2"),
    ]
    return keras.Sequential(layers, name=name)


@keras.saving.register_keras_serializable(package="mnc_tf")
class ClassHead(keras.layers.Layer):
    """Box pathway + mask pathway → softmax over N+1 classes and class-specific box deltas.

    * box pathway: the warped RoI features ``[R, S, S, C]`` max-pooled to
      ``pool_size × pool_size`` → fc ``fc_dim`` → fc ``fc_dim``;
    * mask pathway ("mask pooling"): the same features multiplied by the stage-2 soft mask
      resized to ``S × S`` → max-pool → fc → fc. The product keeps the class loss
      differentiable w.r.t. the mask head (DESIGN.md §1);
    * the two ``fc_dim`` vectors are concatenated → class logits ``N+1`` and box deltas
      ``4·(N+1)``.

    Call: ``(roi_features [R, S, S, C], mask_probs [R, m, m])`` →
    ``(class_logits [R, N+1] float32, box_deltas [R, N+1, 4] float32)``.
    """

    def __init__(self, num_classes, fc_dim=4096, pooled_size=14, pool_size=7, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.fc_dim = int(fc_dim)
        self.pooled_size = int(pooled_size)
        self.pool_size = int(pool_size)
        pool = self.pooled_size // self.pool_size
        self.box_pathway = _pathway("box_pathway", self.fc_dim, pool)
        self.mask_pathway = _pathway("mask_pathway", self.fc_dim, pool)
        self.cls = HeadDense(
            self.num_classes + 1,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="cls_score",
        )
        self.box = HeadDense(
            4 * (self.num_classes + 1),
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            name="bbox_pred",
        )

    def build(self, roi_features_shape, mask_probs_shape=None):
        self.box_pathway.build(tuple(roi_features_shape))
        self.mask_pathway.build(tuple(roi_features_shape))
        self.cls.build((None, 2 * self.fc_dim))
        self.box.build((None, 2 * self.fc_dim))
        self.built = True

    def call(self, roi_features, mask_probs):
        s = self.pooled_size
        soft = tf.image.resize(tf.cast(mask_probs, tf.float32)[..., None], [s, s], "bilinear")
        masked = tf.cast(roi_features, tf.float32) * soft
        x = tf.concat([self.box_pathway(roi_features), self.mask_pathway(masked)], axis=-1)
        logits = tf.cast(self.cls(x), tf.float32)
        deltas = tf.reshape(tf.cast(self.box(x), tf.float32), [-1, self.num_classes + 1, 4])
        return logits, deltas

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            fc_dim=self.fc_dim,
            pooled_size=self.pooled_size,
            pool_size=self.pool_size,
        )
        return config

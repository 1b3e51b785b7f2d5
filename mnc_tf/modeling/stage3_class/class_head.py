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
    * the two ``fc_dim`` vectors are concatenated → class logits ``N+1`` (the mask-level
      classifier, released ``seg_cls_score``) and box deltas ``4·(N+1)``; with
      ``det_classifier`` also the released code's box-level classifier ``det_cls_score``
      (its ``cls_score``), trained on box-IoU labels and unused at test time.

    Call: ``(roi_features [R, S, S, C], mask_probs [R, m, m])`` →
    ``(class_logits [R, N+1] float32, box_deltas [R, N+1, 4] float32)``, plus
    ``det_logits [R, N+1]`` with ``return_det=True`` (needs ``det_classifier``).
    """

    def __init__(
        self, num_classes, fc_dim=4096, pooled_size=14, pool_size=7, det_classifier=False, **kwargs
    ):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.fc_dim = int(fc_dim)
        self.pooled_size = int(pooled_size)
        self.pool_size = int(pool_size)
        self.det_classifier = bool(det_classifier)
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
        self.det_cls = None
        if self.det_classifier:
            self.det_cls = HeadDense(
                self.num_classes + 1,
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                name="det_cls_score",
            )

    def build(self, roi_features_shape, mask_probs_shape=None):
        self.box_pathway.build(tuple(roi_features_shape))
        self.mask_pathway.build(tuple(roi_features_shape))
        self.cls.build((None, 2 * self.fc_dim))
        self.box.build((None, 2 * self.fc_dim))
        if self.det_cls is not None:
            self.det_cls.build((None, 2 * self.fc_dim))
        self.built = True

    def call(self, roi_features, mask_probs, return_det=False):
        s = self.pooled_size
        soft = tf.image.resize(tf.cast(mask_probs, tf.float32)[..., None], [s, s], "bilinear")
        # Mask pooling in the features' dtype: under mixed precision a float32 product would
        # cost two full-size casts of [R, S, S, C] for no accuracy (the fc layers read
        # bfloat16 / float16 anyway).
        masked = roi_features * tf.cast(soft, roi_features.dtype)
        x = tf.concat([self.box_pathway(roi_features), self.mask_pathway(masked)], axis=-1)
        logits = tf.cast(self.cls(x), tf.float32)
        deltas = tf.reshape(tf.cast(self.box(x), tf.float32), [-1, self.num_classes + 1, 4])
        if return_det:
            if self.det_cls is None:
                raise ValueError("ClassHead(det_classifier=False) has no box-level classifier")
            return logits, deltas, tf.cast(self.det_cls(x), tf.float32)
        return logits, deltas

    def load_pathway_fc(self, fc1, fc2):
        """Start both pathways' two fc layers from given weights (e.g. VGG-16's ImageNet
        ``fc1`` / ``fc2``, as the released model's fc6/fc7 and fc6_mask/fc7_mask).

        Args:
          fc1, fc2: ``(kernel, bias)`` numpy pairs, shapes ``[P·P·C, fc_dim]``, ``[fc_dim]``
            and ``[fc_dim, fc_dim]``, ``[fc_dim]`` (``P = pool_size``; the kernel rows in
            Keras ``Flatten`` order of a ``[P, P, C]`` map).
        """
        for pathway in (self.box_pathway, self.mask_pathway):
            for suffix, (kernel, bias) in (("fc1", fc1), ("fc2", fc2)):
                layer = pathway.get_layer(f"{pathway.name}_{suffix}")
                want = [tuple(w.shape) for w in layer.weights]
                got = [tuple(kernel.shape), tuple(bias.shape)]
                if want != got:
                    raise ValueError(
                        f"ClassHead.load_pathway_fc: {layer.name} needs weights of shapes "
                        f"{want}, got {got} (VGG-16 fc6/fc7 need fc_dim=4096, 512 channels "
                        "and class_pool_size=7)"
                    )
                layer.set_weights([kernel, bias])

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            fc_dim=self.fc_dim,
            pooled_size=self.pooled_size,
            pool_size=self.pool_size,
            det_classifier=self.det_classifier,
        )
        return config

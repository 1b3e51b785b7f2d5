"""The paper's optimiser recipe as Keras objects (used by ``MNC.compile()`` without arguments)."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mnc_tf")
class StepWithWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """``learning_rate`` (after an optional linear warm-up), × ``drop_factor`` for the last
    ``drop_fraction`` of ``total_steps`` (paper: 1e-3 for 32k iterations then 1e-4 for 8k).
    """

    def __init__(
        self, learning_rate, total_steps, drop_fraction=0.2, drop_factor=0.1, warmup_steps=0
    ):
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.drop_fraction = float(drop_fraction)
        self.drop_factor = float(drop_factor)
        self.warmup_steps = int(warmup_steps)

    @property
    def boundary(self):
        """First step run at the dropped learning rate."""
        return int(round(self.total_steps * (1.0 - self.drop_fraction)))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        lr = tf.where(
            step >= float(self.boundary),
            self.learning_rate * self.drop_factor,
            self.learning_rate,
        )
        if self.warmup_steps > 0:
            lr = lr * tf.minimum(1.0, (step + 1.0) / float(self.warmup_steps))
        return lr

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "total_steps": self.total_steps,
            "drop_fraction": self.drop_fraction,
            "drop_factor": self.drop_factor,
            "warmup_steps": self.warmup_steps,
        }


def build_optimizer(config):
    """SGD (momentum, decoupled weight decay via the optimizer's ``weight_decay``), Adam or
    AdamW per ``config.optimizer``, on a :class:`StepWithWarmup` schedule. Biases are
    excluded from weight decay (the Caffe models use ``decay_mult: 0`` on biases).
    """
    schedule = StepWithWarmup(
        config.learning_rate,
        config.total_steps,
        config.lr_drop_fraction,
        config.lr_drop_factor,
        config.warmup_steps,
    )
    wd = config.weight_decay or None
    common = dict(learning_rate=schedule, weight_decay=wd, clipnorm=config.clipnorm)
    if config.optimizer == "sgd":
        opt = keras.optimizers.SGD(momentum=config.momentum, **common)
    elif config.optimizer == "adam":
        opt = keras.optimizers.Adam(**common)
    else:
        opt = keras.optimizers.AdamW(**{**common, "weight_decay": config.weight_decay})
    if wd:
        opt.exclude_from_weight_decay(var_names=["bias"])
    return opt

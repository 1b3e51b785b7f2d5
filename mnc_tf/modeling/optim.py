"""The paper's optimiser recipe as Keras objects (used by ``MNC.compile()`` without arguments)."""

import re

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


@keras.saving.register_keras_serializable(package="mnc_tf")
class CaffeSGD(keras.optimizers.SGD):
    """SGD with momentum and weight decay as the paper's Caffe solver applies them, fused.

    Per step, for a weight ``w`` with gradient ``g``, momentum buffer ``v``, learning rate
    ``lr``, momentum ``mu`` and ``weight_decay`` ``lam``::

        v <- mu * v - lr * (g + lam * w)      # L2 term inside the gradient, as Caffe
        w <- w + v

    Keras' own ``SGD(weight_decay=...)`` instead shrinks ``w`` by ``lr * lam * w`` outside
    the momentum (decoupled), whose steady-state decay is ``1 - mu`` = 10x weaker at
    ``mu = 0.9`` than the paper's ``weight_decay: 0.0005``. Variables excluded with
    :meth:`exclude_from_weight_decay` get no decay.

    ``bias_lr_mult`` is Caffe's ``param { lr_mult: 2 }`` on biases (every learned bias of the
    released prototxt): a variable named ``bias`` updates with ``lr · bias_lr_mult``, decay
    term included (Caffe scales the regularised gradient by the local rate).

    The update is one fused kernel per variable (``ResourceApplyKerasMomentum``, threaded)
    instead of Keras' five element-wise passes; with MNC's 2 × 103M-weight fc6 layers that
    is most of the optimizer's time on a CPU. Works under ``tf.distribute`` strategies and
    mixed precision like ``keras.optimizers.SGD``.
    """

    def __init__(
        self, learning_rate=1e-3, momentum=0.9, nesterov=False, bias_lr_mult=1.0, **kwargs
    ):
        super().__init__(
            learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs
        )
        self.bias_lr_mult = float(bias_lr_mult)

    def get_config(self):
        config = super().get_config()
        config["bias_lr_mult"] = self.bias_lr_mult
        return config

    def _apply_weight_decay(self, variables):
        """Weight decay is part of :meth:`update_step`'s gradient (Caffe semantics)."""

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        if self.bias_lr_mult != 1.0 and is_bias(variable):
            lr = lr * tf.cast(self.bias_lr_mult, dtype)
        grad = tf.convert_to_tensor(tf.cast(gradient, dtype))
        if self.weight_decay is not None and self._use_weight_decay(variable):
            grad = grad + tf.cast(self.weight_decay, dtype) * tf.convert_to_tensor(variable)
        if self.momentum == 0:
            self.assign_sub(variable, lr * grad)
            return
        momentum = self.momentums[self._get_variable_index(variable)]
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=_handle(variable),
            accum=_handle(momentum),
            lr=lr,
            grad=grad,
            momentum=tf.cast(self.momentum, dtype),
            use_locking=False,
            use_nesterov=self.nesterov,
        )


def is_bias(variable):
    """True for a layer's bias: Keras names it ``bias`` (the strategy-local TF variable the
    update may receive is ``.../bias:0``)."""
    parts = variable.name.split(":")[0].split("/")
    if len(parts) > 1 and re.fullmatch(r"replica_\d+", parts[-1]):
        parts = parts[:-1]  # MirroredStrategy names replica k's copy ".../bias/replica_k"
    return parts[-1] == "bias"


def _handle(variable):
    """Resource handle of a Keras or TF variable (the local copy inside a strategy update)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


def build_optimizer(config):
    """:class:`CaffeSGD` (the paper's solver: momentum, L2 weight decay in the gradient),
    Adam or AdamW (decoupled decay) per ``config.name`` (``config``: the model's
    :class:`~mnc_tf.config.OptimizerConfig`, ``model.config.optimizer``), on a
    :class:`StepWithWarmup` schedule. As the released prototxt (``lr_mult: 2`` on biases,
    no ``decay_mult`` so 1): biases learn at ``bias_lr_mult`` × the rate (SGD only) and are
    decayed unless ``bias_weight_decay`` is False.
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
    if config.name == "sgd":
        opt = CaffeSGD(momentum=config.momentum, bias_lr_mult=config.bias_lr_mult, **common)
    elif config.name == "adam":
        opt = keras.optimizers.Adam(**common)
    else:
        opt = keras.optimizers.AdamW(**{**common, "weight_decay": config.weight_decay})
    if wd and not config.bias_weight_decay:
        opt.exclude_from_weight_decay(var_names=["bias"])
    return opt

"""CaffeSGD against a NumPy transcription of Caffe's SGD solver update."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mnc_tf.modeling.optim import CaffeSGD


def caffe_sgd_reference(weights, grads_per_step, lr, momentum, decay, decayed, nesterov):
    """v <- mu v - lr (g + lam w); w <- w + v (Nesterov: w <- w + mu v - lr (g + lam w))."""
    weights = [w.copy() for w in weights]
    velocity = [np.zeros_like(w) for w in weights]
    for grads in grads_per_step:
        for i, g in enumerate(grads):
            step_grad = g + (decay * weights[i] if decayed[i] else 0.0)
            velocity[i] = momentum * velocity[i] - lr * step_grad
            if nesterov:
                weights[i] += momentum * velocity[i] - lr * step_grad
            else:
                weights[i] += velocity[i]
    return weights


@pytest.mark.parametrize("nesterov", [False, True])
def test_caffe_sgd_matches_numpy_reference(nesterov):
    rng = np.random.default_rng(0)
    init = [
        rng.standard_normal((5, 3)).astype(np.float32),
        rng.standard_normal(3).astype(np.float32),
    ]
    kernel = keras.Variable(init[0], name="kernel")
    bias = keras.Variable(init[1], name="bias")
    opt = CaffeSGD(learning_rate=0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.05)
    opt.exclude_from_weight_decay(var_names=["bias"])
    grads = [[rng.standard_normal(w.shape).astype(np.float32) for w in init] for _ in range(4)]
    for g in grads:
        opt.apply_gradients(zip([tf.constant(x) for x in g], [kernel, bias], strict=True))
    expected = caffe_sgd_reference(init, grads, 0.1, 0.9, 0.05, [True, False], nesterov)
    np.testing.assert_allclose(kernel.numpy(), expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias.numpy(), expected[1], rtol=1e-5, atol=1e-6)
    # and it is not Keras' decoupled decay, which lands elsewhere
    decoupled = keras.Variable(init[0])
    keras_opt = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.05)
    for g in grads:
        keras_opt.apply_gradients([(tf.constant(g[0]), decoupled)])
    assert np.abs(decoupled.numpy() - expected[0]).max() > 1e-3


def test_caffe_sgd_without_momentum_or_decay_is_plain_sgd():
    w = keras.Variable(np.ones(4, np.float32))
    opt = CaffeSGD(learning_rate=0.5, momentum=0.0)
    opt.apply_gradients([(tf.constant([1.0, 2.0, 3.0, 4.0]), w)])
    np.testing.assert_allclose(w.numpy(), [0.5, 0.0, -0.5, -1.0])


def test_caffe_sgd_serializes():
    opt = CaffeSGD(learning_rate=0.02, momentum=0.8, weight_decay=1e-4)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(again, CaffeSGD)
    assert (again.momentum, again.weight_decay) == (0.8, 1e-4)
    assert float(again.learning_rate) == pytest.approx(0.02)


def test_is_bias_recognises_mirrored_replica_copies():
    """MirroredStrategy names replica k's copy ``.../bias/replica_k:0``: every copy of a bias
    must get the bias learning-rate multiplier, or the replicas' weights drift apart."""
    from types import SimpleNamespace

    from mnc_tf.modeling.optim import is_bias

    def named(name):
        return SimpleNamespace(name=name)

    assert is_bias(named("mnc/rpn/conv/bias:0"))
    assert is_bias(named("mnc/rpn/conv/bias/replica_1:0"))
    assert is_bias(named("bias/replica_12:0"))
    assert not is_bias(named("mnc/rpn/conv/kernel/replica_1:0"))
    assert not is_bias(named("mnc/rpn/conv/kernel:0"))
    assert not is_bias(named("replica_1:0"))

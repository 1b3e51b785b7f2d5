"""A Dense layer whose input gradient avoids TF's slow ``MatMul(transpose_b=True)`` on CPU.

The heads' big fully connected layers (fc6: 25088 × 4096 weights, 400 MB) back-propagate
``dx = dy · Wᵀ``. TensorFlow runs that as ``MatMul(dy, W, transpose_b=True)``, which on CPU
is ~5x slower than computing the same product as ``(W · dyᵀ)ᵀ`` (measured on TF 2.21 with
oneDNN, 1 thread, 67 RoIs: 1.56 s vs 0.30 s) — in the 5-stage training step that was 4 of
its 25 seconds. :class:`HeadDense` is ``keras.layers.Dense`` with that one change.
"""

import keras
import tensorflow as tf


@tf.custom_gradient
def matmul_fast_input_grad(x, w):
    """``x @ w`` for ``x [R, K]``, ``w [K, N]``; gradients as autodiff, computed as
    ``dx = (w · dyᵀ)ᵀ`` and ``dw = xᵀ · dy``."""
    y = tf.matmul(x, w)

    def grad(dy):
        dx = tf.transpose(tf.matmul(w, dy, transpose_b=True))
        dw = tf.matmul(x, dy, transpose_a=True)
        return dx, dw

    return y, grad


@keras.saving.register_keras_serializable(package="mnc_tf")
class HeadDense(keras.layers.Dense):
    """``keras.layers.Dense`` for rank-2 inputs, with :func:`matmul_fast_input_grad`.

    Same arguments, weights, serialization and mixed-precision behaviour as ``Dense``; inputs
    of another rank, LoRA or quantized modes fall back to ``Dense.call``.
    """

    _kernel_t = None

    def use_transposed_kernel(self):
        """Inference: compute ``x · W`` from a ``[units, input_dim]`` copy of the kernel.

        oneDNN's bfloat16 matmul on CPU packs ``W`` into pairs along the input dimension on
        every call; from the transposed copy (``MatMul(x, Wᵀ, transpose_b=True)``) those pairs
        are already contiguous: measured on this project's AVX512-BF16 CPU, 1.5× faster for
        fc6 (300 × 25088 × 4096) and 1.15× for the smaller head layers. The copy is a
        non-trainable ``tf.Variable`` outside the Keras weights (``get_weights`` and saving are
        unchanged) and is not updated by later writes to ``kernel``: call this again after
        changing the weights. :func:`mnc_tf.precision.with_precision` calls it for 16-bit
        inference copies.
        """
        self._kernel_t = tf.Variable(
            tf.transpose(tf.convert_to_tensor(self.kernel)), trainable=False, name="kernel_t"
        )

    def call(self, inputs, training=None):
        if (
            len(inputs.shape) != 2
            or getattr(self, "lora_enabled", False)
            or getattr(self, "quantization_mode", None)
        ):
            return super().call(inputs, training=training)
        if self._kernel_t is not None:
            x = tf.matmul(inputs, self._kernel_t, transpose_b=True)
        else:
            x = matmul_fast_input_grad(inputs, tf.convert_to_tensor(self.kernel))
        if self.bias is not None:
            x = tf.nn.bias_add(x, tf.convert_to_tensor(self.bias))
        if self.activation is not None:
            x = self.activation(x)
        return x

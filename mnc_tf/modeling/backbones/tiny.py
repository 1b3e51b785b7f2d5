"""A small conv backbone for tests and CPU demos (stride 4, 8, 16 or 32)."""

import math

import keras


def build_tiny(
    feature_stride=16, filters=(32, 64, 128, 256, 256), convs_per_stage=2, out_channels=None
):
    """``log2(feature_stride)`` stages of ``convs_per_stage`` 3×3 ReLU convs, the first with
    stride 2, optionally followed by a 1×1 projection to ``out_channels``.

    Args:
      feature_stride: 4, 8, 16 or 32.
      filters: channels of the stages (at least ``log2(feature_stride)`` entries).
      convs_per_stage: convs per stage.
      out_channels: channels of the optional final 1×1 conv (None: no projection).

    Returns:
      ``keras.Model``: images scaled to [-1, 1] ``[B, H, W, 3]`` →
      ``[B, ceil(H/stride), ceil(W/stride), C]``.
    """
    if feature_stride not in (4, 8, 16, 32):
        raise ValueError(
            f"feature_stride for the tiny backbone must be 4, 8, 16 or 32, got {feature_stride!r}"
        )
    num_stages = int(math.log2(feature_stride))
    if len(filters) < num_stages:
        raise ValueError(
            f"tiny_filters needs {num_stages} entries for feature_stride {feature_stride}, "
            f"got {tuple(filters)!r}"
        )
    inputs = keras.Input((None, None, 3), name="images")
    x = inputs
    for s in range(num_stages):
        for c in range(convs_per_stage):
            x = keras.layers.Conv2D(
                int(filters[s]),
                3,
                strides=2 if c == 0 else 1,
                padding="same",
                activation="relu",
                kernel_initializer="he_normal",
                name=f"stage{s + 1}_conv{c + 1}",
            )(x)
    if out_channels:
        x = keras.layers.Conv2D(
            int(out_channels), 1, activation="relu", kernel_initializer="he_normal", name="proj"
        )(x)
    return keras.Model(inputs, x, name="tiny")

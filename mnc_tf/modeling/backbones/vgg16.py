"""VGG-16 to conv5_3 (stride 16, 512 channels), the paper's backbone."""

import keras


def build_vgg16(weights=None, freeze_early_layers=True):
    """``keras.applications.VGG16`` cut at ``block5_conv3`` (the last pool is dropped).

    Args:
      weights: None or a local weights file for ``VGG16(include_top=False)``.
      freeze_early_layers: freeze conv1–conv2 (``block1_*``, ``block2_*``) as in the paper.

    Returns:
      ``keras.Model``: caffe-normalised BGR images ``[B, H, W, 3]`` →
      ``[B, ceil(H/16), ceil(W/16), 512]`` (exactly ``H/16`` for multiples of 16).
    """
    base = keras.applications.VGG16(include_top=False, weights=weights, input_shape=(None, None, 3))
    model = keras.Model(base.input, base.get_layer("block5_conv3").output, name="vgg16")
    if freeze_early_layers:
        for layer in model.layers:
            if layer.name.startswith(("block1_", "block2_")):
                layer.trainable = False
    return model

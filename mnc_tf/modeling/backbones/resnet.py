"""ResNet-50/101 to the conv4 stage output (stride 16, 1024 channels)."""

import keras

_CUTS = {
    "resnet50": ("ResNet50", "conv4_block6_out"),
    "resnet101": ("ResNet101", "conv4_block23_out"),
}


def build_resnet(name, weights=None, freeze_early_layers=True):
    """``keras.applications.ResNet50/101`` cut at the last conv4 block.

    Batch norm is frozen (inference statistics, not trained): with one or two images per
    device batch statistics are meaningless, as in the paper's and Detectron's training.

    Args:
      name: ``"resnet50"`` or ``"resnet101"``.
      weights: None or a local weights file for the application with ``include_top=False``.
      freeze_early_layers: freeze the stem and conv2 stage (Detectron's ``FREEZE_AT=2``).

    Returns:
      ``keras.Model``: caffe-normalised BGR images ``[B, H, W, 3]`` → ``[B, H/16, W/16, 1024]``.
    """
    app, cut = _CUTS[name]
    base = getattr(keras.applications, app)(
        include_top=False, weights=weights, input_shape=(None, None, 3)
    )
    model = keras.Model(base.input, base.get_layer(cut).output, name=name)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        elif freeze_early_layers and layer.name.startswith(("conv1_", "conv2_")):
            layer.trainable = False
    return model

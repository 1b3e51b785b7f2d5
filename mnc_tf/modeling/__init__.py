"""The MNC model, laid out as the paper's Figure 2.

``backbones/`` (shared conv features) → ``stage1_rpn/`` (boxes) → ``stage2_mask/`` (masks) →
``stage3_class/`` (categories) → ``cascade.py`` (stages 2, 3, 4, 5 as a list of stages run by
one loop) → ``postprocess.py`` (NMS, mask voting); ``matching.py`` (IoU matching, RoI labels),
``sampling.py`` (random keys), ``losses.py`` (loss terms and their weights), ``gradients.py``
(gradient clamps), ``inputs.py`` (input / target checks), ``factory.py`` (builds the parts),
``mnc.py`` (the ``keras.Model``).
"""

from mnc_tf.modeling.mnc import MNC

__all__ = ["MNC"]

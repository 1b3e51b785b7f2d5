"""The MNC model, laid out as the paper's Figure 2.

``backbones/`` (shared conv features) → ``stage1_rpn/`` (boxes) → ``stage2_mask/`` (masks) →
``stage3_class/`` (categories) → ``cascade.py`` (stages 4–5 as data) → ``postprocess.py``
(NMS, mask voting); ``losses.py``, ``factory.py`` (builds the parts), ``mnc.py`` (the
``keras.Model``).
"""

from mnc_tf.modeling.mnc import MNC

__all__ = ["MNC"]

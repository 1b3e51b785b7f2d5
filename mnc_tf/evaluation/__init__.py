"""Evaluation: COCO AP/AR (pycocotools) and VOC/SDS mAP^r, a model runner and a callback."""

from mnc_tf.evaluation.callback import EvaluationCallback, write_scalars
from mnc_tf.evaluation.coco_evaluator import COCOEvaluator
from mnc_tf.evaluation.detections import normalize_detections, outputs_to_original
from mnc_tf.evaluation.evaluate import (
    bind_evaluators,
    evaluate_model,
    model_preprocessing,
    summary_table,
)
from mnc_tf.evaluation.voc_evaluator import VOCEvaluator, mask_iou, voc_ap

__all__ = [
    "COCOEvaluator",
    "EvaluationCallback",
    "VOCEvaluator",
    "bind_evaluators",
    "evaluate_model",
    "mask_iou",
    "model_preprocessing",
    "normalize_detections",
    "outputs_to_original",
    "summary_table",
    "voc_ap",
    "write_scalars",
]

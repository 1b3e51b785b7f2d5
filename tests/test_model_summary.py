"""``model.summary()`` before and after the model is called, and after ``mnc_tf.load_model``;
the loaded model carries its preprocessing."""

import numpy as np

import mnc_tf


def _summary(model):
    lines = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line), line_length=120)
    return "\n".join(lines)


def _roi_warp_row(text):
    rows = [line for line in text.splitlines() if "roi_warp (RoIWarp)" in line]
    assert len(rows) == 1, text
    return rows[0]


def test_summary_before_and_after_call_and_after_load(tmp_path):
    config = mnc_tf.MNCConfig.tiny_shapes(
        short_side=64,
        max_side=96,
        input_normalization="caffe",
        mask_binarize_threshold=0.45,
        predict_score_threshold=0.3,
    )
    model = mnc_tf.MNC(3, backbone="tiny", num_stages=3, config=config)
    before = _summary(model)
    assert "rpn_head (RPNHead)" in before and "Total params" in before

    model(np.zeros((1, 64, 64, 3), np.uint8))
    after = _summary(model)
    # The RoI features: any number of boxes, pooled_size x pooled_size cells, the backbone's
    # channels (tiny_out_channels = 64 in this preset).
    pooled = config.heads.roi_pooled_size
    assert f"(None, {pooled}, {pooled}, 64)" in _roi_warp_row(after)
    total = [line for line in after.splitlines() if "Total params" in line]
    assert total == [line for line in before.splitlines() if "Total params" in line]

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = mnc_tf.load_model(path)
    # What consumers (mnc-eval, mnc-predict, evaluate_model, the export) read from the model.
    assert loaded.config == config  # the whole tree round-trips through the .keras file
    for section, field in (
        ("input", "short_side"),
        ("input", "max_side"),
        ("input", "normalization"),
        ("postprocess", "mask_threshold"),
        ("postprocess", "predict_score_threshold"),
    ):
        got = getattr(getattr(loaded.config, section), field)
        assert got == getattr(getattr(config, section), field), field
    pre = loaded.preprocessing  # the saved Preprocessing layer carries the resize sides
    assert (pre.short_side, pre.max_side) == (config.input.short_side, config.input.max_side)
    reloaded = _summary(loaded)
    assert total == [line for line in reloaded.splitlines() if "Total params" in line]
    loaded(np.zeros((1, 64, 64, 3), np.uint8))
    assert f"(None, {pooled}, {pooled}, 64)" in _roi_warp_row(_summary(loaded))

"""The learning rate scaled to the global batch drives the optimizer; the model keeps the user's."""

import json
import os

import pytest
import tensorflow as tf
from training_testutil import tiny_experiment


@pytest.mark.timeout(600)
def test_scaled_rate_goes_to_the_optimizer_and_the_saved_config_keeps_the_users(tmp_path):
    import mnc_tf
    from mnc_tf.training import train

    # Global batch 2 against a reference batch of 8: linear scaling gives 0.01 * 2 / 8.
    user_lr, scaled_lr = 0.01, 0.01 * 2 / 8
    cfg = tiny_experiment(
        tmp_path / "shapes",
        model={"total_steps": 4, "learning_rate": user_lr},
        train={
            "steps_per_epoch": 2,
            "reference_batch_size": 8,
            "scale_learning_rate": True,
            "checkpoint_every": 2,
            "log_every": 2,
        },
    )
    cfg["data"]["shapes"]["num_val_images"] = 0
    run = tmp_path / "run"
    history = train(cfg, str(run))
    assert history.run_info["learning_rate"] == pytest.approx(scaled_lr)
    assert history.run_info["base_learning_rate"] == pytest.approx(user_lr)

    # What the optimizer applied during fit (TrainingSummaries reads the live optimizer at
    # step 2, before the schedule's drop at 80% of 4 steps).
    logged = []
    for name in os.listdir(run / "logs"):
        for event in tf.compat.v1.train.summary_iterator(str(run / "logs" / name)):
            for v in event.summary.value:
                if v.tag == "train/learning_rate":
                    logged.append((event.step, float(tf.make_ndarray(v.tensor))))
    assert logged and logged[0][0] == 2
    assert logged[0][1] == pytest.approx(scaled_lr)

    # The saved model: its config has the user's rate, its optimizer the scaled one.
    model = mnc_tf.load_model(str(run / "final.keras"))
    assert model.config.optimizer.learning_rate == pytest.approx(user_lr)
    schedule = model.optimizer._learning_rate
    assert schedule.learning_rate == pytest.approx(scaled_lr)
    with open(run / "run_info.json") as f:
        assert json.load(f)["learning_rate"] == pytest.approx(scaled_lr)

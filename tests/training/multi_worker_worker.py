"""Child process of test_train_distribute: one worker of a MultiWorkerMirroredStrategy run.

Usage: ``TF_CONFIG=... python multi_worker_worker.py CONFIG.yaml MODEL_DIR OUT_PREFIX``.
Runs ``mnc_tf.training.train`` (the config selects ``train.strategy: multi_worker``) and
writes this worker's final weights to ``OUT_PREFIX.npz`` and its run info to
``OUT_PREFIX.json``.
"""

import json
import sys

from mnc_tf.training.config import load_config


def main(config_path, model_dir, out_prefix):
    config = load_config(config_path)  # no TF op yet: the strategy is created first in train()
    import numpy as np

    from mnc_tf.training.train import train

    history = train(config, model_dir)
    weights = history.model.get_weights()
    np.savez(out_prefix + ".npz", *weights)
    info = dict(history.run_info)
    info["iterations"] = int(history.model.optimizer.iterations.numpy())
    with open(out_prefix + ".json", "w") as f:
        json.dump(info, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])

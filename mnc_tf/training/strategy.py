"""Choosing the ``tf.distribute`` strategy, and what follows from it (global batch, lr, chief).

==================  ============================================================================
``auto``            ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names a cluster;
                    else ``MirroredStrategy`` over all local GPUs when there are ≥ 2 (or,
                    without GPUs, over the logical CPU devices if :func:`split_cpu` made
                    several); else ``OneDeviceStrategy`` on the one GPU; else the default
                    strategy (CPU).
``default``         TensorFlow's no-op default strategy (whatever device TF places ops on).
``one_device``      ``OneDeviceStrategy`` on ``/gpu:0`` if there is a GPU, else ``/cpu:0``.
``mirrored``        ``MirroredStrategy`` over all local GPUs; without GPUs, over all *logical*
                    CPU devices (see :func:`split_cpu`) — how the tests run it on a laptop.
``multi_worker``    ``MultiWorkerMirroredStrategy`` (needs ``TF_CONFIG``, see below).
==================  ============================================================================

``TF_CONFIG`` (one per process) follows TensorFlow's format::

    {"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}

Worker 0 (or the ``chief`` task if the cluster has one) is the chief: it alone writes
checkpoints, logs, the best model and the export; the other workers write to scratch
directories that are deleted (all workers must take part in a save, TF's multi-worker rule).

Strategies must be created before any other TensorFlow op runs in a multi-worker process, so
call :func:`select_strategy` first thing.
"""

from __future__ import annotations

import json
import logging
import os

import tensorflow as tf

logger = logging.getLogger("mnc_tf.training")

STRATEGY_NAMES = ("auto", "default", "one_device", "mirrored", "multi_worker")


def split_cpu(num_devices: int):
    """Split the physical CPU into ``num_devices`` logical devices ``/cpu:0 … /cpu:N-1``.

    Must run before TensorFlow initialises its devices (before the first op); used to test
    ``MirroredStrategy`` and to measure scaling on a machine without GPUs.

    Raises:
      ValueError: ``num_devices < 1``.
      RuntimeError: TensorFlow is already initialised with a different number of CPU devices.
    """
    if num_devices < 1:
        raise ValueError(f"num_devices must be >= 1, got {num_devices}.")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
        )
    except RuntimeError as e:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != num_devices:
            raise RuntimeError(
                f"Cannot split the CPU into {num_devices} logical devices: TensorFlow is already "
                f"initialised with {have}. Call split_cpu() before any TensorFlow op runs."
            ) from e


def tf_config() -> dict | None:
    """The parsed ``TF_CONFIG`` environment variable, or ``None`` if unset/empty.

    Raises:
      ValueError: ``TF_CONFIG`` is not JSON or has no ``cluster`` / ``task``.
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}: {raw!r}") from e
    if not isinstance(cfg, dict) or not cfg.get("cluster") or "task" not in cfg:
        raise ValueError(
            "TF_CONFIG must be JSON with 'cluster' and 'task', e.g. "
            '{"cluster": {"worker": ["h1:1234", "h2:1234"]}, "task": {"type": "worker", '
            f'"index": 0}}; got {raw!r}'
        )
    return cfg


def select_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Create the strategy called ``name`` (see the module docstring for the rules).

    Raises:
      ValueError: unknown ``name``, or ``multi_worker`` without a valid ``TF_CONFIG``.
    """
    if name not in STRATEGY_NAMES:
        raise ValueError(f"strategy must be one of {STRATEGY_NAMES}, got {name!r}.")
    cluster = tf_config()
    if name == "auto":
        if cluster is not None:
            name = "multi_worker"
        else:
            gpus = tf.config.list_logical_devices("GPU")
            cpus = tf.config.list_logical_devices("CPU")
            if len(gpus) >= 2 or (not gpus and len(cpus) >= 2):  # CPU split on purpose
                name = "mirrored"
            else:
                name = "one_device" if gpus else "default"
    if name == "multi_worker":
        if cluster is None:
            raise ValueError(
                "strategy 'multi_worker' needs the TF_CONFIG environment variable describing "
                "the cluster and this process's task."
            )
        # AUTO picks NCCL between GPUs and ring all-reduce over gRPC between CPUs.
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        if gpus:
            return tf.distribute.MirroredStrategy(devices)
        # NCCL is GPU-only; CPU replicas reduce through one device.
        return tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return tf.distribute.get_strategy()


def patch_model_for_multi_worker(model):
    """Make ``model.fit`` work under ``MultiWorkerMirroredStrategy`` with Keras 3 (≤ 3.15).

    Keras 3's TF trainer has two multi-worker bugs (keras-team/keras issues 20329, 20585,
    open): (1) before training it all-reduces one input batch with ``strategy.reduce("MEAN",
    batch)`` to build the model symbolically, which rejects a dict of per-replica tensors
    ("Attempt to convert a value ({'images': PerReplica ...}) to a Tensor"); (2) it reduces the
    train step's logs with ``strategy.reduce("MEAN", v, axis=0)``, which fails for the scalar
    logs every model returns ("Invalid reduction dimension 0 for input with 0 dimensions").

    For this model instance only: (1) the symbolic build is skipped — it has nothing to do
    when the model and its optimizer are already built; (2) ``train_step``'s logs are returned
    as ``[1]`` tensors, which the reduction averages over replicas back into scalars.

    Raises:
      RuntimeError: the model or its optimizer is not built yet.
    """
    if not (model.built and model.optimizer is not None and model.optimizer.built):
        raise RuntimeError(
            "build the model and its optimizer (model.optimizer.build(model.trainable_variables)) "
            "before patch_model_for_multi_worker"
        )
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    train_step = model.train_step

    def train_step_rank1_logs(data):
        logs = train_step(data)
        return {k: tf.reshape(v, [1]) for k, v in logs.items()}

    model.train_step = train_step_rank1_logs
    return model


def describe(strategy: tf.distribute.Strategy) -> str:
    """One line: strategy class, replicas, devices or worker role."""
    kind = type(strategy).__name__
    n = strategy.num_replicas_in_sync
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        resolver = strategy.cluster_resolver
        workers = len(resolver.cluster_spec().as_dict().get("worker", [])) + len(
            resolver.cluster_spec().as_dict().get("chief", [])
        )
        return (
            f"{kind}: {n} replicas on {workers} workers; this is "
            f"{resolver.task_type} {resolver.task_id}{' (chief)' if is_chief(strategy) else ''}"
        )
    try:
        devices = tuple(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has no device list
        devices = ()
    return f"{kind}: {n} replica(s) on {', '.join(devices) or 'the default device'}"


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes checkpoints/logs/exports (always true on one host)."""
    strategy = strategy or tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_id(strategy: tf.distribute.Strategy | None = None) -> str:
    """``"<task_type>_<task_id>"`` in a cluster, ``"local"`` otherwise (for scratch dirs)."""
    strategy = strategy or tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "local"
    resolver = strategy.cluster_resolver
    return f"{resolver.task_type}_{resolver.task_id}"


def global_batch_size(per_replica_batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """Global batch = per-replica batch × replicas in sync (all workers)."""
    return int(per_replica_batch_size) * int(strategy.num_replicas_in_sync)


def scaled_learning_rate(
    base_learning_rate: float, global_batch: int, reference_batch_size: int
) -> float:
    """Linear scaling rule (Goyal et al. 2017): ``base × global_batch / reference_batch``."""
    if reference_batch_size < 1 or global_batch < 1:
        raise ValueError(
            f"global_batch ({global_batch}) and reference_batch_size ({reference_batch_size}) "
            "must be >= 1."
        )
    return float(base_learning_rate) * global_batch / reference_batch_size

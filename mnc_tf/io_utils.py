"""Atomic writes: a file or directory appears complete under its name, or not at all.

Everything is written under a temporary name in the target's directory (same filesystem) and
renamed into place with ``os.replace`` once complete, so a reader — a resumed run, TF Serving
watching an export directory — never sees a half-written file. A process killed mid-write
leaves only the temporary (``<name>.tmp-<hex>`` by default; the training run's
``remove_interrupted_writes`` deletes such leftovers); an exception removes it. This protects
against a killed process, not against losing the machine's power: nothing is fsync'ed.

    atomic_write_text("run/config.yaml", text)
    atomic_write_json("run/history.json", history, indent=1, default=float)
    with atomic_path("run/final.keras", suffix=".keras") as tmp:
        model.save(tmp)                              # anything that writes to a path
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


@contextlib.contextmanager
def atomic_path(path, *, suffix="", temp_dir=None, temp_prefix=None):
    """A temporary path that replaces ``path`` when the ``with`` block completes.

    Write a file (or create a directory) at the yielded path. On normal exit it is renamed
    to ``path``, replacing a file there (atomically) or a directory there (removed first);
    on an exception the temporary is removed and ``path`` is left as it was.

    Args:
      path: the final path.
      suffix: appended to the temporary name (e.g. ``".keras"``: ``model.save`` wants it).
      temp_dir: directory of the temporary (default: ``path``'s); must be on ``path``'s
        filesystem.
      temp_prefix: name the temporary ``<temp_prefix><hex><suffix>`` instead of
        ``<basename of path>.tmp-<hex><suffix>``.
    """
    path = os.fspath(path)
    directory = os.fspath(temp_dir) if temp_dir is not None else os.path.dirname(path)
    directory = directory or "."
    token = uuid.uuid4().hex
    if temp_prefix is None:
        name = f"{os.path.basename(path)}.tmp-{token}{suffix}"
    else:
        name = f"{temp_prefix}{token}{suffix}"
    tmp = os.path.join(directory, name)
    try:
        yield tmp
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def atomic_write_text(path, text, encoding="utf-8"):
    """Write ``text`` to ``path`` atomically (see the module docstring)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding=encoding) as f:
            f.write(text)


def atomic_write_json(path, obj, **dump_kwargs):
    """``json.dump(obj, ..., **dump_kwargs)`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, **dump_kwargs)

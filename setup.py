"""Installs mnc_tf and compiles the RoI warping custom op (custom_ops/) into mnc_tf/ops/.

The op links against the TensorFlow installed in this environment, so install without build
isolation after the requirements:

    pip install -r requirements.txt && pip install --no-build-isolation -e .
"""

import os
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithOp(build_py):
    """``build_py`` that also compiles ``mnc_tf/ops/_mnc_ops.so`` from ``custom_ops/``."""

    def run(self):
        super().run()
        sys.path.insert(0, HERE)
        from custom_ops.build import build as build_op

        if getattr(self, "editable_mode", False):
            out_dir = os.path.join(HERE, "mnc_tf", "ops")
        else:
            out_dir = os.path.join(self.build_lib, "mnc_tf", "ops")
        build_op(out_dir)


def _requirements():
    # Runtime requirements only: everything above the "# build" marker of requirements.txt.
    reqs = []
    with open(os.path.join(HERE, "requirements.txt")) as f:
        for line in f:
            line = line.strip()
            if line == "# build":
                break
            if line and not line.startswith("#"):
                reqs.append(line)
    return reqs


setup(
    name="mnc_tf",
    version="0.1.0",
    description="Multi-task Network Cascades (instance segmentation) for TF2 / Keras 3",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["mnc_tf", "mnc_tf.*"]),
    package_data={"mnc_tf.ops": ["*.so"]},
    include_package_data=True,
    install_requires=_requirements(),
    cmdclass={"build_py": BuildPyWithOp},
    entry_points={
        "console_scripts": [
            "mnc-train = mnc_tf.cli.train:main",
            "mnc-eval = mnc_tf.cli.evaluate:main",
            "mnc-predict = mnc_tf.cli.predict:main",
            "mnc-export = mnc_tf.cli.export:main",
        ]
    },
)

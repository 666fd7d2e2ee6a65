"""Installs gunshot-spotter: gunshot_core, pipelines, training and deploy, plus the `gunshot` command.

The same file is the `--setup_file` of Dataflow workers: Beam builds an sdist from it and installs it
on every worker, so the runtime requirements below are the tested pins from requirements.txt.
"""

import pathlib

import setuptools

HERE = pathlib.Path(__file__).resolve().parent
VERSION = "0.1.0"


def runtime_requirements():
    """The pinned runtime requirements: requirements.txt up to its development section."""
    requirements = []
    for line in (HERE / "requirements.txt").read_text().splitlines():
        if line.startswith("# Development"):
            break
        line = line.split("#", 1)[0].strip()
        if line:
            requirements.append(line)
    return requirements


def precision_requirements():
    """The pinned int8 runtime (`pip install 'gunshot-spotter[precision]'`): requirements-precision.txt."""
    path = HERE / "requirements-precision.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


setuptools.setup(
    name="gunshot-spotter",
    version=VERSION,
    description="Gunshot detection on VGGish embeddings: subset building, batch scoring and training",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["gunshot_core*", "pipelines*", "training*", "deploy*"]),
    package_data={"gunshot_core": ["data/*", "data/heads/*"], "deploy": ["*", "templates/*"]},
    include_package_data=True,
    install_requires=runtime_requirements(),
    extras_require={"precision": precision_requirements()},
    entry_points={"console_scripts": ["gunshot = gunshot_core.cli:main"]},
)

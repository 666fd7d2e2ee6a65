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


def extra_requirements(name: str) -> list[str]:
    """The pins of an optional extra: requirements-<name>.txt without comments."""
    path = HERE / f"requirements-{name}.txt"
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines()) if path.exists() else ()
    return [line for line in lines if line]


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
    extras_require={
        "precision": extra_requirements("precision"),  # int8/bf16 runtime: OpenVINO + NNCF
        # BirdNET V2.4 embeddings (gunshot_core.birdnet); its model is licensed CC BY-NC-SA 4.0
        "birdnet": extra_requirements("birdnet"),
    },
    entry_points={"console_scripts": ["gunshot = gunshot_core.cli:main"]},
)

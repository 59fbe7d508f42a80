"""Imported once by the loader's forkserver so that forked loader children start with torchvision ready."""

from qtradeoff.core import tvcompat

tvcompat.models()

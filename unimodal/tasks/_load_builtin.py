"""Imports the built-in task modules so they register themselves."""
from . import audio, image, point, video, weather  # noqa: F401

"""Imports the built-in task modules so they register themselves."""
from . import audio, image, point, timeseries, video  # noqa: F401

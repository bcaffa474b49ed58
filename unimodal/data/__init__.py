"""Data readers for the benchmark data sets and the built-in synthetic default sets."""
from .errors import DataError, SkipReport

__all__ = ['DataError', 'SkipReport']

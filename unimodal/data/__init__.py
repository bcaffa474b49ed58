"""Data readers for the benchmark data sets and the built-in synthetic default sets."""
from .cache import CacheDirError, resolve_cache_dir
from .errors import DataError, SkipReport
from .prepare import prepare_datasets

__all__ = ['DataError', 'SkipReport', 'CacheDirError', 'resolve_cache_dir', 'prepare_datasets']

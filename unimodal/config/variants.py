"""The trunk variant (``model.variant``, ``--model``) is checked when a config is resolved, before any data is read."""
from __future__ import annotations

from .errors import ConfigError, suggest


def check_variant(variant: str, key: str = 'model.variant (--model)') -> None:
    """Raise :class:`ConfigError` naming ``key`` unless ``variant`` is a model in timm's registry (where the
    UniRepLKNet variants register themselves), with the closest UniRepLKNet name as a suggestion."""
    import timm

    from ..models import unireplknet  # noqa: F401  (registers the variants)
    if not isinstance(variant, str) or not timm.is_model(variant):
        known = timm.list_models('unireplknet*')
        raise ConfigError(f'{key}={variant!r} is not a known model{suggest(str(variant), known)} '
                          f'(UniRepLKNet variants: {", ".join(known)}; `unimodal models` lists them with sizes)')

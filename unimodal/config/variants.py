"""The trunk's config (``model.variant``, ``model.pretrained``, ``model.trunk``) checked when a config is resolved,
before any data is read: the same checks the model build makes, run early so a typo costs a second, not a data scan."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping

from .errors import ConfigError, short_repr, suggest

__all__ = ['check_variant', 'check_pretrained', 'check_trunk_options', 'TRUNK_KEYS_SET_ELSEWHERE']

#: Trunk constructor arguments another part of the config decides (the trunk key would clash with it).
TRUNK_KEYS_SET_ELSEWHERE: Dict[str, str] = {
    'in_chans': "the adapter's channel count (or model.trunk_chans)",
    'num_classes': 'the task head (the trunk is built without a classifier)',
    'drop_path_rate': 'model.drop_path_rate',
    'drop_rate': "model.drop_rate (dropout before the head's Linear)",
    'device': 'train.device',
}


def check_variant(variant: str, key: str = 'model.variant (--model)') -> None:
    """Raise :class:`ConfigError` naming ``key`` unless ``variant`` is a model in timm's registry (where the
    UniRepLKNet variants register themselves), with the closest UniRepLKNet name as a suggestion."""
    import timm

    from ..models import unireplknet  # noqa: F401  (registers the variants)
    if not isinstance(variant, str) or not timm.is_model(variant):
        known = timm.list_models('unireplknet*')
        raise ConfigError(f'{key}={variant!r} is not a known model{suggest(str(variant), known)} '
                          f'(UniRepLKNet variants: {", ".join(known)}; `unimodal models` lists them with sizes)')


def _released() -> Dict[str, List[str]]:
    """Released weight tags by variant, from the registered pretrained configs."""
    import timm

    from ..models import unireplknet  # noqa: F401
    out: Dict[str, List[str]] = {}
    for name in timm.list_pretrained('unireplknet*'):
        variant, tag = name.split('.', 1)
        out.setdefault(variant, []).append(tag)
    return out


def check_pretrained(variant: str, pretrained: Any, key: str = 'model.pretrained (--pretrained)') -> None:
    """Raise :class:`ConfigError` when ``pretrained`` asks for released weights ``variant`` does not have
    (``true``: any; a tag such as ``in1k``: that one), naming the variants that have them. A path is checked
    when it is loaded."""
    if pretrained is False or pretrained is None:
        return
    released = _released()
    tags = sorted({t for ts in released.values() for t in ts})
    if isinstance(pretrained, str) and pretrained not in tags:
        return  # a checkpoint path
    have = released.get(variant, [])
    if (pretrained is True and have) or pretrained in have:
        return
    wanted = 'released weights' if pretrained is True else f'{pretrained} weights'
    holders = [v for v, ts in released.items() if pretrained is True or pretrained in ts]
    own = f' (its tags: {", ".join(have)})' if have else ''
    raise ConfigError(f'{key}={short_repr(pretrained)}: there are no {wanted} for {variant}{own}; they exist for '
                      f'{", ".join(holders)}: choose one with --model (model.variant), or give a checkpoint path')


def check_trunk_options(variant: str, trunk: Mapping[str, Any], key: str = 'model.trunk') -> None:
    """Raise :class:`ConfigError` naming ``key`` unless the trunk constructor accepts ``trunk`` for ``variant``:
    the trunk is built on the meta device (no memory, ~0.1 s for XL), so names and values are checked by the
    constructor's own validation, with its suggestion for a misspelt name."""
    import timm

    from ..models import unireplknet, unireplknet_layout  # noqa: F401  (registers the variants)
    for name in trunk:
        if name in TRUNK_KEYS_SET_ELSEWHERE:
            raise ConfigError(f'{key}.{name} cannot be set: it comes from {TRUNK_KEYS_SET_ELSEWHERE[name]}')
    try:
        timm.create_model(variant, num_classes=0, device='meta', **trunk)
    except (TypeError, ValueError) as e:  # the constructor refuses names with TypeError, values with ValueError
        msg = str(e)
        named = next((n for n in trunk if msg.startswith(f'{n} ')), None)
        if named is not None:  # a value refused; the constructor's message names the option and what is allowed
            raise ConfigError(f'{key}.{named} for {variant}: {msg}') from None
        valid = [a for a in unireplknet_layout.INIT_ARGS if a not in TRUNK_KEYS_SET_ELSEWHERE and a != 'dtype']
        raise ConfigError(f'{key} for {variant}: {msg} (trunk options: '
                          f'{", ".join(valid)}; `unimodal tasks NAME --defaults` shows the values in use)') from None

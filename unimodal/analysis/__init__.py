"""Analyses of trained or random-init models: the effective receptive field (``unimodal analyze erf``)."""
from .erf import THRESHOLDS, adapter_grid, area_ratios, erf_map, log_scale, task_model_erf
from .erf_plot import save_comparison, save_heatmap

__all__ = ['THRESHOLDS', 'adapter_grid', 'area_ratios', 'erf_map', 'log_scale', 'task_model_erf', 'save_comparison',
           'save_heatmap']

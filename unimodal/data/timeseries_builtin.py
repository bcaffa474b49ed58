"""The built-in synthetic weather set (a TSLib-style CSV of temperature-like stations and their coordinates),
written once through :func:`unimodal.data.builtin.build_once`."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple, Union

import numpy as np

from .builtin import build_once

__all__ = ['BUILTIN_FILE', 'COORDS_FILE', 'make_builtin_timeseries']

PathLike = Union[str, Path]
BUILTIN_FILE = 'weather_synthetic.csv'
COORDS_FILE = 'stations_sorted.npy'
_BUILTIN_VERSION = 2

def _synthetic_weather(seed: int, num_hours: int, num_stations: int) -> Tuple[np.ndarray, np.ndarray]:
    """Temperature-like ``(T, N)`` field (daily cycles, seasonal drift, moving fronts, AR noise) and the stations'
    ``(N, 3)`` coordinates: latitude, longitude (degrees) and elevation (m)."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_hours, dtype=np.float64)[:, None]
    lon, lat = rng.uniform(0, 1, num_stations), rng.uniform(0, 1, num_stations)
    # climate: colder to the north, a station-specific offset (read as altitude: 6.5 °C colder per km)
    offset = rng.normal(0, 1.5, num_stations)
    base = 18.0 - 10.0 * lat + offset
    coords = np.stack([40.0 + 10.0 * lat, -5.0 + 15.0 * lon, 500.0 - offset / 6.5e-3], 1)
    # daily cycle: local solar time shifts the peak with longitude; continental stations swing more
    amp = 3.0 + 5.0 * (1 - lat) * rng.uniform(0.6, 1.4, num_stations)
    peak = 14.0 + 4.0 * (lon - 0.5) + rng.normal(0, 0.5, num_stations)
    phase = 2 * np.pi * (t - peak) / 24.0
    daily = amp * (np.cos(phase) + 0.25 * np.cos(2 * phase - 0.7))
    # slow seasonal trend (warming over the period) and a ~40-day oscillation shared by the region
    seasonal = 6.0 * (t / num_hours) + 2.5 * np.sin(2 * np.pi * t / (24 * 40) + rng.uniform(0, 2 * np.pi))
    # weather fronts sweep across the region: arrival lags by the station's position along the front direction
    fronts = np.zeros((num_hours, num_stations))
    n_events = max(1, num_hours // 60)
    for _ in range(n_events):
        t0 = rng.uniform(-24, num_hours)
        theta = rng.normal(0.0, 0.6)  # mostly west → east
        along = np.cos(theta) * lon + np.sin(theta) * lat
        cross = rng.uniform(18, 40)  # hours to cross the region
        arrival = t0 + cross * (along - along.min())
        size = rng.normal(-4.0, 2.5) if rng.uniform() < 0.7 else rng.normal(3.0, 1.5)
        decay = rng.uniform(24, 60)
        dt = t - arrival[None, :]
        onset = 0.5 * (1.0 + np.tanh(dt / 4.0))  # a logistic step of width ~2 h, overflow-free
        fronts += size * onset * np.exp(-np.clip(dt, 0, None) / decay)
    # cloudy fronts damp the daily swing a little (a non-additive interaction)
    daily = daily * (1.0 - 0.3 * np.tanh(np.abs(fronts) / 4.0))
    # AR(1) noise: a regional part and a local part
    noise = np.zeros((num_hours, num_stations))
    reg, loc = 0.0, np.zeros(num_stations)
    e_reg, e_loc = rng.normal(0, 0.25, num_hours), rng.normal(0, 0.35, (num_hours, num_stations))
    for i in range(num_hours):
        reg = 0.95 * reg + e_reg[i]
        loc = 0.8 * loc + e_loc[i]
        noise[i] = reg + loc
    return (base + daily + seasonal + fronts + noise).astype(np.float64), coords


def make_builtin_timeseries(root: PathLike, seed: int = 0, num_hours: int = 24 * 150,
                            num_stations: int = 24) -> Path:
    """Write (once) the built-in synthetic multi-station weather CSV and return its path.

    ``root/weather_synthetic.csv``: a ``date`` column (hourly from 2021-01-01) and ``num_stations`` columns
    ``st00, st01, ...`` of temperature-like values (°C) with station-specific daily cycles, a slow trend, weather
    fronts that reach the stations with position-dependent lags (cross-series structure matters), and AR noise.
    ``root/stations_sorted.npy``: the stations' latitude, longitude and elevation ``(N, 3)`` float64, in the layout of
    the Global Temp/Wind release (read with the option ``coords=stations_sorted.npy``).
    Deterministic for a seed; written and reused as :func:`unimodal.data.builtin.build_once` describes.
    """
    import pandas as pd

    def write(out: Path) -> None:
        values, coords = _synthetic_weather(seed, num_hours, num_stations)
        df = pd.DataFrame(np.round(values, 2), columns=[f'st{i:02d}' for i in range(num_stations)])
        df.insert(0, 'date', pd.date_range('2021-01-01', periods=num_hours, freq='h').strftime('%Y-%m-%d %H:%M:%S'))
        df.to_csv(out / BUILTIN_FILE, index=False, float_format='%.2f')
        np.save(out / COORDS_FILE, np.round(coords, 4))

    # legacy: earlier versions wrote the CSV alone (no marker); such a folder is rebuilt
    root = build_once(root, generator='weather', version=_BUILTIN_VERSION, write=write, legacy=(BUILTIN_FILE,),
                      settings={'seed': seed, 'num_hours': num_hours, 'num_stations': num_stations})
    return Path(root) / BUILTIN_FILE


# the first names of the two functions, kept for existing callers

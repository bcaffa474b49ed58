"""What each built-in task is and where its data comes from, without importing torch (``unimodal tasks``).

The task classes (``unimodal/tasks/<name>.py``) take their ``description`` and ``real_data`` from here, so the
listing, the errors about a wrong data folder and the built-in-data notice say the same thing;
tests/test_cli_usability.py checks the other fields against the registered tasks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

__all__ = ['TaskInfo', 'TASK_INFO']


@dataclass(frozen=True)
class TaskInfo:
    """One task's facts. ``real_data``: the real data set's source and the on-disk layout ``--data`` expects;
    ``builtin``: the synthetic set written (once, into the cache folder) when ``--data`` is omitted."""

    name: str
    aliases: Tuple[str, ...]
    adapter: str
    kind: str
    description: str
    real_data: str
    builtin: str


TASK_INFO: Dict[str, TaskInfo] = {
    'audio': TaskInfo(
        name='audio', aliases=(), adapter='audio', kind='classification',
        description='Keyword spotting on Speech Commands V2 (35 or 12 classes) from 16 kHz waveforms',
        real_data='Speech Commands V2 (Warden 2018, CC BY 4.0): '
        'http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz (2.3 GB), or run '
        '`unimodal data download speech_commands --root DIR`. Expected layout under DIR: one folder per word '
        '(<word>/<speaker>_nohash_<n>.wav, 16 kHz mono 16-bit WAV, <= 1 s), validation_list.txt and '
        'testing_list.txt (relative paths; train = every clip in neither list), and _background_noise_/ '
        '(long noise WAVs, not a class). data.options.variant: 35 (every word) or 12 (10 commands + '
        '_unknown_ + _silence_).',
        builtin=(
        '8 synthetic words in the Speech Commands V2 layout (16 kHz mono WAVs, validation_list.txt, '
        'testing_list.txt, _background_noise_/): 35 speakers split 25/5/5, 50/10/10 clips per word')),
    'point': TaskInfo(
        name='point', aliases=(), adapter='point', kind='classification',
        description='point-cloud classification: ModelNet40 (raw OFF, normal_resampled text, PointNet HDF5, '
        'Point-BERT .dat)',
        real_data='ModelNet40 (40 classes, 9843 train / 2468 test shapes). Raw meshes: '
        'http://modelnet.cs.princeton.edu/ModelNet40.zip (`unimodal data download modelnet40 --root DIR`, '
        'then --data DIR/ModelNet40), layout '
        'DIR/<class>/{train,test}/<class>_NNNN.off; sampled point clouds are cached as .npz on first use. '
        'Also read: modelnet40_normal_resampled (`unimodal data download modelnet40_normal_resampled --root DIR`; '
        'modelnet40_shape_names.txt, modelnet40_{train,test}.txt, <class>/<class>_NNNN.txt with x,y,z,nx,ny,nz lines), '
        'PointNet HDF5 modelnet40_ply_hdf5_2048/ply_data_{train,test}N.h5 (needs h5py), and the Point-BERT '
        'modelnet40_{train,test}_8192pts_fps.dat (loaded with a restricted unpickler that accepts numpy arrays only). '
        'The format is detected from the folder (data.options.format overrides). ModelNet40 has no validation split: '
        'val is a held-out 10% of train (data.options.val_from=test uses the test set, as most papers do).',
        builtin=(
        '8 classes of parametric low-poly meshes as raw ModelNet40 OFF files '
        '(<class>/{train,test}/<class>_NNNN.off), 32 train / 10 test per class')),
    'video': TaskInfo(
        name='video', aliases=(), adapter='video', kind='classification',
        description='Kinetics-400 action recognition: (B, 3, T, H, W) clips -> 400 classes',
        real_data='Kinetics-400 has no direct download: get the videos from the CVDF mirror '
        '(github.com/cvdfoundation/kinetics-dataset, k400 tarballs + annotations) or the ActivityNet/OpenDataLab '
        'copies, or fetch them from YouTube with yt-dlp using the official CSVs (6-8% have vanished; the run '
        'reports how many were found). Expected layout under --data ROOT, either\n'
        '  ROOT/{train,val,test}.txt  "path label" lists (VideoMAE/mmaction2 style, label = class index or name, '
        'paths relative to ROOT), optional ROOT/classes.txt, or\n'
        '  ROOT/{train,val,test}.csv (or annotations/*.csv, validate.csv) official CSVs '
        '(label,youtube_id,time_start,time_end,split) with the videos <youtube_id>_<start:06d>_<end:06d>.mp4 '
        'anywhere under ROOT/train, ROOT/val, ROOT/test (flat or per-class folders).',
        builtin=(
        '8 classes of synthetic motion-pattern MP4 clips in the Kinetics list layout '
        '({train,val,test}/clip_NNNN.mp4, {train,val,test}.txt, classes.txt), 40/10/10 per class, 40 frames of 64x64')),
    'timeseries': TaskInfo(
        name='timeseries', aliases=('weather',), adapter='timeseries', kind='forecast',
        description='multi-series forecasting: (B, L, N) windows -> (B, H, N) (Global Temp/Wind, TSLib CSVs)',
        real_data='Global Temp / Global Wind (Corrformer, Nature Machine Intelligence 2023; hourly NCEI data of 3,850 '
        'stations, 2019-2020; from the Corrformer release, no direct download): a folder holding '
        '{temp,wind}_global_hourly_{train,val,test}.npy of shape (T, 3850, 1) (values stored x10; metrics are '
        'reported on that scale and converted to physical units with phys_scale=0.1), optionally '
        'data_time_{split}.npy and stations_sorted.npy (station coordinates). Select with '
        'data.options.variable=temp|wind. Published set-up (configs/weather_global_temp.yaml): input_len 48, '
        'horizon 24, calendar features (data.options.marks=true) and station coordinates '
        '(data.options.coords=stations_sorted.npy), model.adapter.mode=paper: 350 trunk images of 11 stations, '
        "embed_dim 768 (192x192 maps), forecaster=corrformer.\n"
        'Time-Series-Library / Autoformer CSVs (weather.csv: 21 variables at 10-minute steps; ETTh1.csv: 7 '
        'variables hourly): a CSV with a `date` column then the variables; point data.root at the file or at a '
        'folder holding it (data.options.file=NAME if several). Split 70/10/20 in time order (ETT files: TSLib\'s '
        '12/4/4 months), scaler fit on train only, metrics on the normalised scale; the usual set-up is '
        'input_len 96, horizon 96/192/336/720.\n'
        'Any other CSV with a time column: data.options.time_column=NAME, columns=[...].',
        builtin=(
        'a TSLib-style CSV (weather_synthetic.csv: a date column, 24 stations hourly for 150 days) with weather '
        'fronts that reach the stations with lags, and stations_sorted.npy (station coordinates)')),
    'image': TaskInfo(
        name='image', aliases=(), adapter='image', kind='classification',
        description='image classification: ImageNet-style ImageFolder (train/<class>/*, val/<class>/*)',
        real_data='ImageNet-1K (ILSVRC 2012, registration at https://image-net.org/) in the ImageFolder layout: '
        'DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG (validation images sorted into class folders); '
        'DIR/test/<class>/* is used for the test split when present, otherwise val. Any data set in this '
        'layout works (reader defaults: 224 pixels, crop_pct 0.875, bicubic). Evaluate a released UniRepLKNet '
        'ImageNet classifier with `unimodal eval --task image --checkpoint unireplknet_a_in1k_224_acc77.03.pth '
        '--data DIR` (384 models: --set data.options.pretrained_cfg=unireplknet_b.in22k_ft_in1k_384, which '
        'warps to 384x384 without a crop as published); start '
        'training from released trunk weights with --pretrained in1k (or a path to the official .pth).',
        builtin=(
        '6 classes of structural patterns (stripes, checkerboards, rings, disks, squares) as an ImageFolder of PNGs '
        '({train,val,test}/<class>/*.png), 80/20/20 per class')),
}

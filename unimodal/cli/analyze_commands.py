"""``unimodal analyze erf``: the handler lives with the analysis (:mod:`unimodal.analysis.erf_cli`)."""
from __future__ import annotations

import argparse


def cmd_analyze(args: argparse.Namespace) -> int:
    from ..analysis.erf_cli import run_erf
    return {'erf': run_erf}[args.analyze_command](args)

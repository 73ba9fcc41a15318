"""Worst-case group error under distribution shift: real test windows split into groups (time segments,
channels, volatility regimes, corrupted inputs), every model variant rolled out on each (docs/reliability.md)."""

from .data import Series, Windows, parse_split, read_csv, standardize, windows
from .evaluate import REFERENCE, Forecaster, ReliabilityTable, evaluate
from .groups import CORRUPTIONS, SEVERITIES, Group, build_groups, corrupt, volatility

__all__ = [
    "CORRUPTIONS",
    "REFERENCE",
    "SEVERITIES",
    "Forecaster",
    "Group",
    "ReliabilityTable",
    "Series",
    "Windows",
    "build_groups",
    "corrupt",
    "evaluate",
    "parse_split",
    "read_csv",
    "standardize",
    "volatility",
    "windows",
]

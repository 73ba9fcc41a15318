"""The example model shipped in the package (see vic_elec_mlp.md, its model card)."""

from pathlib import Path

EXAMPLE_MODEL = Path(__file__).with_name("vic_elec_mlp.onnx")


def example_model() -> Path:
    """Path of the shipped example: a small forecaster trained on vic_elec (half-hourly demand, temperature)."""
    return EXAMPLE_MODEL

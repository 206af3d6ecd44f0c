"""xlt: zero-shot cross-lingual transfer after English intermediate-task training, across model sizes."""

from pathlib import Path

__version__ = "0.1.0"

PROJECT_ROOT = Path(__file__).resolve().parent.parent

"""How the ``twin`` command prints a table."""

from __future__ import annotations

import pandas as pd


def format_table(df: pd.DataFrame) -> str:
    """``df`` without its index, floats to 4 decimals."""
    return df.to_string(index=False, float_format=lambda v: f"{v:.4f}")


__all__ = ["format_table"]

"""Trial data: the canonical table, readers of every layout, validation, batch tensors."""

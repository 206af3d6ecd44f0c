"""Per-run result rows, the transfer gap, and sweep aggregation."""

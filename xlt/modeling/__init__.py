"""Encoder loading, the head registry and the LightningModule that joins them."""

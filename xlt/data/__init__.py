"""LightningDataModules, featurisation with a tokenised-feature cache, and length-grouped batching."""

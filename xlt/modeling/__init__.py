"""Encoder loading, the head registry and the LightningModule that joins them."""

# Head plugins: each registers its head kind in xlt.modeling.heads.HEADS.
from xlt.modeling import heads_mc, heads_qa, heads_tagging  # noqa: F401

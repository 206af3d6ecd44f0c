"""Under the FSDP profiles, ranks > 0 may wait in ``init_process_group`` or FSDP's
``sync_module_states`` while rank 0 alone loads the model or evaluates a retrieval set first:
the strategy's process-group timeout must be long (Lightning's default is 30 min)."""

from __future__ import annotations

import datetime

from xlt.config import validate
from xlt.training.trainer import PROCESS_GROUP_TIMEOUT, build_strategy


def test_fsdp_profiles_get_a_long_process_group_timeout(compose_cfg) -> None:  # type: ignore[no-untyped-def]
    cfg = validate(compose_cfg("model=xlmr_xxl", "scale=fsdp", "+target=xnli"))
    strategy = build_strategy(cfg.scale.strategy)
    assert strategy._timeout == PROCESS_GROUP_TIMEOUT >= datetime.timedelta(hours=12)

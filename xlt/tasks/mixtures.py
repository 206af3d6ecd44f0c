"""Multi-task intermediate stages: ANLI+ and the all-nine mixture of X-STILTs.

Members, which of them share a head, and which are scored on dev are facts of the mixture and live
here; the sampling settings (cap, temperature, steps) and each member's splits are run settings
(``conf/intermediate/<name>.yaml``). Registering a mixture checks its members against the task
registry: the package ``__init__`` imports this module after the task families.
"""

from __future__ import annotations

from xlt.tasks.registry import register_mixture
from xlt.tasks.spec import MixtureSpec

ANLI = register_mixture(
    MixtureSpec(
        name="anli",
        description="ANLI+ = SNLI + MNLI + ANLI rounds 1-3, one shared 3-way NLI head, selected on ANLI dev",
        members=("snli", "mnli", "anli_rounds"),
        shared_heads={"nli": ("snli", "mnli", "anli_rounds")},
        evaluated=("anli_rounds",),
        citation="Nie et al. 2020 (ANLI+ as in jiant's adversarial_nli guide)",
    )
)

ALL_NINE = register_mixture(
    MixtureSpec(
        name="all9",
        description="the nine X-STILTs intermediate tasks together (ANLI+ flattened; MNLI trained once, "
        "on ANLI+'s shared NLI head)",
        members=("anli", "mnli", "qqp", "squad", "squad2", "hellaswag", "ccg", "cosmosqa", "csqa"),
    )
)

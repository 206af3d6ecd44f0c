"""The config lock: a relaunch into a run directory must have the configuration that started it,
except for the keys that do not change a number the run reports (:data:`RESULT_NEUTRAL_KEYS`, the one
list of them: the intermediate stage's reuse key leaves the same keys out)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from xlt.orchestration.rundir import RunDirError
from xlt.schema import CONF_DIR, MOVED_TARGETS, ConfigError, TrainConfig
from xlt.utils.frozen import thaw

if TYPE_CHECKING:
    from xlt.orchestration.plan_sections import ConfigRecord

# The one list of keys that do not change a number the run reports (what is logged where, how fast
# data is read, how often a resume point is written, whether predictions are also written, what the
# job asks the scheduler for): a relaunch may change them (every other key of the resolved config must
# equal the stored config.yaml's), and the intermediate stage's reuse key leaves them out (xlt/orchestration/reuse.py).
RESULT_NEUTRAL_KEYS = (
    "logger",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "data.cache_dir",
    "data.num_workers",
    "resume",
    "predictions",
    "scale.checkpoint_every_n_steps",
    "model.license",  # what an export's model card says
    "reuse",  # where the intermediate stage is kept: it is keyed, and a relaunch keeps its folder (xlt/orchestration/reuse.py)
    "scale.name",  # a profile's label; its settings are compared one by one
    "scale.gpu_memory_gb",  # what per_device_batch_size=auto fits: the resolved batch is compared
    "scale.host_memory_gb",  # the host memory a SLURM job asks for
)


def is_result_neutral(key: str) -> bool:
    """Whether the dotted config ``key`` is (under) one of :data:`RESULT_NEUTRAL_KEYS`."""
    return any(key == k or key.startswith(k + ".") for k in RESULT_NEUTRAL_KEYS)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def config_differences(config: ConfigRecord, stored: dict[str, Any]) -> list[str]:
    """The result-changing keys (dotted) whose values differ between the plan's ``config`` and ``stored``."""
    # config.yaml keeps ${oc.env:...} unresolved (xlt/public_config.py); one written before that holds values.
    now, resolved, before = _flatten(thaw(config.public)), _flatten(thaw(config.resolved)), _flatten(stored)
    before = {k: MOVED_TARGETS.get(v, v) if k.endswith("_target_") else v for k, v in before.items()}
    keys = sorted(k for k in now.keys() | before.keys() if not is_result_neutral(k))
    return [
        k
        for k in keys
        if before.get(k, "<absent>") not in (now.get(k, "<absent>"), resolved.get(k, "<absent>"))
        and not (
            k not in before and (now.get(k) in (found := _defaults(k, before)) or resolved.get(k) in found)
        )
    ]


def _defaults(key: str, stored: dict[str, Any]) -> list[Any]:
    """What a key absent from a stored config (a run started before the key existed) stood for: the
    schema's default and the default in the config group file the run used (``conf/model/<name>.yaml``
    for ``model.revision``), so that adding a key never makes an earlier run unresumable."""
    import dataclasses
    import typing

    found: list[Any] = []
    node: Any = TrainConfig
    for part in key.split("."):
        hints = typing.get_type_hints(node) if dataclasses.is_dataclass(node) else {}
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            node = None
            break
        f = fields[part]
        node = next((a for a in typing.get_args(hints[part]) if dataclasses.is_dataclass(a)), hints[part])
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if node is not None and default is not dataclasses.MISSING:
        found.append(default)
    group, _, rest = key.partition(".")
    name = stored.get(f"{group}.name")
    if rest and name and (CONF_DIR / group / f"{name}.yaml").is_file():
        found.append(OmegaConf.select(OmegaConf.load(CONF_DIR / group / f"{name}.yaml"), rest, default=None))
    return found


def check_same_config(config: ConfigRecord, path: Path) -> None:
    """Refuse a relaunch into a run directory whose stored config differs in a key that changes
    results (one line listing the keys): the directory belongs to the configuration that started it."""
    if not path.is_file():
        return  # a run directory from before config.yaml was kept: nothing to compare with
    try:
        stored = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as err:  # noqa: BLE001 - yaml's and OmegaConf's errors: one line naming the file
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise RunDirError(
            f"{where}: not a readable config ({str(err).splitlines()[0]}); restore it, or rerun with "
            "resume=false to start the run over"
        ) from None
    if not isinstance(stored, dict):
        raise RunDirError(
            f"{path}: expected a mapping of config groups; restore it, or rerun with resume=false"
        )
    diff = config_differences(config, {str(k): v for k, v in stored.items()})
    if diff:
        shown = ", ".join(diff[:12]) + (f" and {len(diff) - 12} more" if len(diff) > 12 else "")
        raise ConfigError(
            f"{path.parent} belongs to another configuration: {shown} differ from its {path.name} "
            "(use another run directory, restore those values, or resume=false to start it over)"
        )

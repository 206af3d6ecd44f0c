"""The sharded-training strategy of the large-model profiles, and what it needs around it.

:class:`FSDP` is Lightning's ``FSDPStrategy`` (FSDP1, ``FullyShardedDataParallel``) with nothing
overridden. It exists because Lightning's accelerator connector refuses ``FSDPStrategy`` without a
GPU by an exact type check (``type(strategy) is FSDPStrategy``, in
``pytorch_lightning/trainer/connectors/accelerator_connector.py``), although torch's FSDP itself
runs on CPU with the gloo backend. Every profile names this class, on GPUs as on CPU, so the
multi-process CPU tests run the very code path the GPU jobs run. Why FSDP1 rather than
``ModelParallelStrategy`` (FSDP2): see docs/sweeps.md.

Two things the run does around it (xlt/orchestration/stage.py, xlt/modeling/module.py):

- gradient-norm clipping through the root FSDP module's ``clip_grad_norm_`` (Lightning's
  ``FSDPPrecision.clip_grad_by_norm`` raises): :func:`clip_grad_norm`;
- FSDP wraps the LightningModule's submodules in place and flattens their parameters, so a wrapped
  encoder is never reused: weights move between stages and Trainers as full state dicts read on
  rank 0 from the checkpoints (sharded directories under the FSDP profile, xlt/training/sharded_ckpt.py),
  loaded into an unwrapped copy built from a meta-device skeleton (:func:`meta_skeleton`, :func:`materialize`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from pytorch_lightning.plugins.precision import FSDPPrecision
from pytorch_lightning.strategies import FSDPStrategy
from torch import nn

# The precision policy of every profile (docs/decoders.md "Precision"; DDP's mixed precision already is it):
# compute in the low dtype under torch.autocast on the run's device, fp32 parameters (also the
# all-gathered compute copy under FSDP: autocast casts each matmul's weight to the low dtype, as under
# DDP; LayerNorm/RMSNorm weights, embeddings and biases stay fp32) and optimizer states, gradients
# reduced (all-reduce or reduce-scatter) in fp32, buffers kept fp32. The price under FSDP: fp32
# all-gathers, twice the bytes of a bf16 param_dtype, and twice the memory of the gathered units.
PARAM_DTYPE = torch.float32
REDUCE_DTYPE = torch.float32
BUFFER_DTYPE = torch.float32


def precision_policy(precision: str, strategy: Any) -> str:
    """What the result rows record as ``precision_policy``: compute/parameter/reduction/buffer dtypes
    of a run with ``scale.precision`` and ``scale.strategy``. The same string for DDP and FSDP under
    one ``*-mixed`` precision (the policy above); rows written before it existed have no field (FSDP
    then gathered bf16 weights, reduced bf16 gradients and kept bf16 buffers)."""
    if "mixed" in precision:
        low = "bf16" if precision.startswith("bf16") else "fp16"
        return f"{precision}:compute={low}-autocast,params=fp32,reduce=fp32,buffers=fp32"
    if precision in ("32-true", "32", "64-true"):
        return f"{precision}:fp32"
    return f"{precision}:lightning{'-fsdp' if is_sharded(strategy) else ''}"  # *-true: Lightning's own


class PolicyFSDPPrecision(FSDPPrecision):
    """Lightning's ``FSDPPrecision`` under the policy above. Lightning's own gathers parameters,
    reduce-scatters gradients and casts buffers in bf16/fp16 under ``*-mixed`` (Qwen's rotary ``inv_freq`` in bf16: ~0.59 rad
    off at position 511) and autocasts only on CUDA, where DDP reduces fp32 and keeps buffers fp32."""

    def __init__(self, precision: Any, scaler: Any = None, device: str | None = None) -> None:
        # Lightning's __init__ tests ``self.precision`` (still the class default "32-true") before it sets
        # it, so any scaler is refused, also 16-mixed's own ShardedGradScaler that the accelerator connector
        # hands over. Build without it (16-mixed then makes a fresh one) and keep the one given.
        super().__init__(precision)
        if scaler is not None:
            if precision != "16-mixed":
                raise ValueError(f"`precision={precision!r}` does not use a scaler, found {scaler}.")
            self.scaler = scaler
        # The run's device type (the strategy's root_device, set by :class:`FSDP` before it wraps), not
        # whether CUDA exists: a CPU run on a GPU node must autocast on CPU.
        self.device = device

    @property
    def mixed_precision_config(self) -> Any:
        from torch.distributed.fsdp import MixedPrecision

        config = super().mixed_precision_config
        if "mixed" not in self.precision:
            return config
        return MixedPrecision(param_dtype=PARAM_DTYPE, reduce_dtype=REDUCE_DTYPE, buffer_dtype=BUFFER_DTYPE)

    def forward_context(self) -> Any:
        if "mixed" not in self.precision:
            return super().forward_context()
        if self.device is None:
            raise RuntimeError(
                "PolicyFSDPPrecision.device is unset: the FSDP strategy sets it to its root device"
            )
        device = self.device
        dtype = torch.bfloat16 if self.precision == "bf16-mixed" else torch.float16
        return torch.autocast(device, dtype=dtype, cache_enabled=False)  # as Lightning's DDP MixedPrecision


class FSDP(FSDPStrategy):
    """Lightning's ``FSDPStrategy``; on GPUs nothing is changed (see the module docstring for why it
    is a subclass). On CPU, one argument differs: Lightning passes ``device_id=root_device.index``,
    which is None for ``cpu``, and torch's FSDP then looks for an accelerator and raises; torch
    accepts ``device_id=torch.device("cpu")``. The module is wrapped with exactly the arguments
    Lightning's ``_setup_model`` uses, then handed to it, which sees it wrapped and does the rest
    (torchmetrics placement, activation checkpointing) as it does on GPUs."""

    @property
    def precision_plugin(self) -> FSDPPrecision:
        return FSDPStrategy.precision_plugin.fget(self)  # type: ignore[attr-defined]

    @precision_plugin.setter
    def precision_plugin(self, plugin: Any) -> None:
        # The accelerator connector hands Lightning's FSDPPrecision: the same precision under the policy.
        if type(plugin) is FSDPPrecision:
            plugin = PolicyFSDPPrecision(plugin.precision, plugin.scaler)  # type: ignore[arg-type]
        if isinstance(plugin, PolicyFSDPPrecision) and self.parallel_devices:
            plugin.device = self.root_device.type
        FSDPStrategy.precision_plugin.fset(self, plugin)  # type: ignore[attr-defined]

    def _setup_model(self, model: nn.Module) -> nn.Module:
        if isinstance(self.precision_plugin, PolicyFSDPPrecision):
            self.precision_plugin.device = self.root_device.type  # autocast where the run runs
        wrapped = self._wrap(model)
        check_layers_wrapped(wrapped)
        log_precision(wrapped, self.precision_plugin)
        return wrapped

    def _wrap(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        # Ranks other than 0 may hold the encoder on the meta device (lean loading: xlt/orchestration/session.py):
        # give its tensors memory on this rank's device, leave everything else alone (torch's
        # default would also re-initialise modules that are already real, torchmetrics' states
        # among them); sync_module_states then broadcasts rank 0's values.
        self.kwargs.setdefault("param_init_fn", partial(empty_meta_tensors, device=self.root_device))

        if self.root_device.type != "cpu" or any(
            isinstance(m, FullyShardedDataParallel) for m in model.modules()
        ):
            return super()._setup_model(model)
        kwargs = dict(self.kwargs)
        if kwargs.get("sync_module_states"):
            # torch refuses sync_module_states for CPU tensors; do what it does (materialise meta
            # tensors, broadcast every parameter and buffer from rank 0) before wrapping.
            on_meta = sum(t.is_meta for t in [*model.parameters(), *model.buffers()])
            sync_from_rank_zero(model, self.root_device)
            kwargs["sync_module_states"] = False
            checksum = sum(float(t.detach().double().sum()) for t in [*model.parameters(), *model.buffers()])
            logging.getLogger(__name__).info(
                "FSDP sync_module_states: rank %d had %d meta tensors; after rank 0's broadcast, checksum %.12e",
                self.global_rank,
                on_meta,
                checksum,
            )
        wrapped = FullyShardedDataParallel(
            module=model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=self.root_device,
            **kwargs,
        )
        # Lightning drops (with a warning) an auto-wrap policy it finds on a wrapped model; it was
        # applied just above, and the next Trainer's fresh strategy object needs it again anyway.
        policy = self.kwargs.pop("auto_wrap_policy", None)
        try:
            return super()._setup_model(wrapped)
        finally:
            if policy is not None:
                self.kwargs["auto_wrap_policy"] = policy

    # Full state dicts on CPU. Lightning gathers them with ``offload_to_cpu=True``; torch's
    # ``FlatParamHandle.to_cpu`` then "moves" the gathered flat parameter to the device it is
    # already on and frees it, so the state dict reads freed memory (a segfault, seen with torch
    # 2.13). With the parameters on CPU there is nothing to offload: gather with it off.

    def _cpu_full(self) -> bool:
        return self.root_device.type == "cpu" and self._state_dict_type == "full"

    def _full_state_dict_context(self, rank0_only: bool = True) -> Any:
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as _FSDP
        from torch.distributed.fsdp.api import FullOptimStateDictConfig

        assert self.model is not None
        return _FSDP.state_dict_type(
            module=self.model,
            state_dict_type=StateDictType.FULL_STATE_DICT,
            state_dict_config=FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
            optim_state_dict_config=FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
        )

    def lightning_module_state_dict(self) -> dict[str, Any]:
        if not self._cpu_full():
            return super().lightning_module_state_dict()
        assert self.model is not None
        with self._full_state_dict_context():
            return self.model.state_dict()

    def optimizer_state(self, optimizer: Any) -> dict[str, torch.Tensor]:
        if not self._cpu_full():
            return super().optimizer_state(optimizer)
        from pytorch_lightning.core.optimizer import LightningOptimizer
        from torch.distributed.fsdp import FullyShardedDataParallel as _FSDP
        from torch.distributed.fsdp import OptimStateKeyType

        if isinstance(optimizer, LightningOptimizer):
            optimizer = optimizer._optimizer
        assert self.model is not None
        with self._full_state_dict_context():
            state = _FSDP.optim_state_dict(self.model, optimizer)
            if self.global_rank == 0:  # the layout Lightning writes (parameter ids)
                state = _FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model)
            return state


def log_precision(wrapped: nn.Module, plugin: Any) -> None:
    """One line in the run's log: the wrapped model's mixed-precision settings, the autocast device
    and the dtypes of its rotary buffers (what the precision policy promises, as the run has it)."""
    mp = getattr(wrapped, "mixed_precision", None)
    dtypes = sorted({str(b.dtype) for n, b in wrapped.named_buffers() if n.endswith("inv_freq")})
    logging.getLogger(__name__).info(
        "FSDP precision: %s param_dtype=%s reduce_dtype=%s buffer_dtype=%s autocast_device=%s inv_freq=%s",
        getattr(plugin, "precision", None),
        getattr(mp, "param_dtype", None),
        getattr(mp, "reduce_dtype", None),
        getattr(mp, "buffer_dtype", None),
        getattr(plugin, "device", None),
        ",".join(dtypes) or "none",
    )


def check_layers_wrapped(module: nn.Module) -> None:
    """Refuse a wrap in which no transformer layer became its own FSDP unit (a wrap policy naming
    another family's layer class would leave the whole model one unit: no sharding per layer, and
    no activation checkpointing)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    units = [m for m in module.modules() if isinstance(m, FullyShardedDataParallel)]
    if len(units) < 2:
        inner = next(iter(units[0].children()), None) if units else module
        raise RuntimeError(
            f"FSDP wrapped no transformer layer of {type(inner).__name__}: the wrap policy's layer class is "
            "not in this model (xlt/modeling/families.py layer_class, conf/scale/fsdp.yaml)"
        )


def empty_meta_tensors(module: nn.Module, device: torch.device) -> None:
    """Give ``module``'s own meta-device parameters and buffers (not its children's: FSDP calls this
    on each module) uninitialised memory on ``device``; FSDP's ``sync_module_states`` fills them."""
    if any(t.is_meta for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]):
        module.to_empty(device=device, recurse=False)


def sync_from_rank_zero(module: nn.Module, device: torch.device) -> None:
    """FSDP's ``sync_module_states`` for a CPU process group: meta tensors get memory, then every
    parameter and buffer is broadcast from rank 0."""
    import torch.distributed as dist

    for sub in module.modules():
        empty_meta_tensors(sub, device)
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def is_sharded(strategy: Any) -> bool:
    """Whether ``scale.strategy`` (a name, a ``_target_`` dict or a strategy object) shards the
    model in place, so that a module it trained must not be reused unwrapped."""
    if isinstance(strategy, str):
        return strategy.startswith("fsdp")
    if isinstance(strategy, FSDPStrategy):
        return True
    target = strategy.get("_target_") if isinstance(strategy, Mapping) else None
    if not target:
        return False
    from hydra.utils import get_class

    return issubclass(get_class(target), FSDPStrategy)


def clip_grad_norm(module: nn.Module, max_norm: float) -> torch.Tensor | None:
    """Clip the gradients of ``module`` (the Trainer's wrapped model) to total norm ``max_norm``.

    Under FSDP each rank holds a shard of every gradient; the root ``FullyShardedDataParallel``'s
    ``clip_grad_norm_`` sums the squared shard norms over the ranks before scaling, which is the
    norm DDP computes over whole gradients. Returns None when ``module`` is not FSDP-wrapped.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel

    if isinstance(module, FullyShardedDataParallel):
        return module.clip_grad_norm_(max_norm)
    return None


def meta_skeleton(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters are on the meta device (no memory) and whose buffers
    are real copies (small: position ids and the like, some of them not in the state dict).
    Everything else is kept: classes, config, LoRA adapters, ``requires_grad``, train mode."""
    memo: dict[int, Any] = {
        id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
        for p in module.parameters()
    }
    return copy.deepcopy(module, memo)


def materialize(skeleton: nn.Module, state_dict: Mapping[str, torch.Tensor] | None) -> nn.Module:
    """A fresh module from ``skeleton`` holding ``state_dict`` (every key required). The state's
    tensors become the parameters (``assign``), so a memory-mapped checkpoint is not copied.
    ``None``: a lean rank's copy, left on the meta device for FSDP to fill from rank 0."""
    module = copy.deepcopy(skeleton)
    if state_dict is None:
        return module
    module.load_state_dict(state_dict, strict=True, assign=True)
    on_meta = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if on_meta:
        raise RuntimeError(f"weights missing from the state dict: {on_meta[:5]}")
    return module

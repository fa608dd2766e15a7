"""
``lam``'s adaptive mode inside verl: one dual step per optimizer step, from that step's ratio statistics reduced over
every process, kept in the optimizer's state so that verl's checkpoints save and restore it.

verl calls a policy loss once per micro-batch and gives it no handle on the optimizer step, and its workers and
trainers are fixed classes. The smallest hook that sees every optimizer step on every rank without changing verl is
torch's global optimizer step post-hook (``torch.optim.optimizer.register_optimizer_step_post_hook``): the loss adds
each training micro-batch's statistics to this process's :class:`VerlDualState`, and the hook, after the engine's
``optimizer.step()``, all-reduces them, steps the controller and writes its state into the optimizer's first param
group, which ``optimizer.state_dict()`` (verl's checkpoint) carries.
"""

import math
from typing import Any

import torch as th
import torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_post_hook

from sb3_r2vpo.core.dual import VarCoefController
from sb3_r2vpo.core.stats import DEFAULT_RATIO_BAND, RatioStats

#: The key of the controller's state in ``optimizer.param_groups[0]``.
DUAL_STATE_KEY = "r2vpo_var_coef_state"


class VerlDualState:
    """
    This process's controller of ``lam`` and the ratio statistics of the optimizer step in progress.

    The controller is built from the first :class:`~llm_adapter.verl.R2VPOPolicyLossConfig` the loss sees.
    """

    def __init__(self) -> None:
        self.controller: VarCoefController | None = None
        self.settings: tuple[Any, ...] | None = None
        self.pending: RatioStats | None = None
        self.optimizer_steps = 0

    def bind(self, config: Any) -> VarCoefController:
        """
        The controller for ``config`` (an :class:`~llm_adapter.verl.R2VPOPolicyLossConfig`), built on first use.

        :raises ValueError: if another loss in this process was configured differently
        """
        settings = (
            config.var_coef,
            config.target_var,
            config.var_coef_lr,
            config.var_coef_max,
            config.var_coef_update,
            config.var_coef_min,
        )
        if self.controller is None:
            self.controller, self.settings = config.controller(), settings
        elif settings != self.settings:
            raise ValueError(
                f"This process already runs R2VPO with (var_coef, target_var, var_coef_lr, var_coef_max, var_coef_update, "
                "var_coef_min)="
                f"{self.settings}; "
                f"a second policy loss asks for {settings}: one process trains one actor with one controller"
            )
        return self.controller

    def add(self, stats: RatioStats) -> None:
        """Add a training micro-batch's ratio statistics to the optimizer step in progress."""
        self.pending = stats if self.pending is None else self.pending.merge(stats)

    def after_optimizer_step(self, optimizer: th.optim.Optimizer) -> None:
        """
        The dual step of one optimizer step (runs on every rank, so the all-reduce is collective).

        :param optimizer: the optimizer that just stepped; its first param group keeps the controller's state
        """
        self.optimizer_steps += 1
        controller = self.controller
        saved = optimizer.param_groups[0].get(DUAL_STATE_KEY)
        if controller is not None and saved is not None and saved["n_steps"] > controller.n_steps:
            controller.load_state_dict(saved)  # the optimizer was restored from a checkpoint
        step_stats = self._reduced(self.pending)
        self.pending = None
        if controller is None or step_stats is None:
            return  # another optimizer (a critic) or a pipeline stage without the loss: nothing to do
        summary = step_stats.summarize(context=f"the dual step after optimizer step {self.optimizer_steps}")
        controller.step(summary["ratio_var"])
        optimizer.param_groups[0][DUAL_STATE_KEY] = controller.state_dict()

    @staticmethod
    def _reduced(stats: RatioStats | None) -> RatioStats | None:
        """
        The statistics summed over every process, or None where no process had any.

        Reduced over the default (world) group: data-parallel ranks hold disjoint tokens, and tensor- or
        sequence-parallel replicas of the same tokens scale sums and counts alike, which leaves every mean as it is.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return stats if stats is not None and _count(stats) > 0 else None
        device = th.device("cpu") if "gloo" in str(dist.get_backend()) else th.device("cuda", th.cuda.current_device())
        if stats is None:
            totals = th.zeros(5, dtype=th.float64, device=device)
            extremes = th.full((2,), math.inf, dtype=th.float64, device=device)
        else:
            count, sums, min_log, max_log = stats.tensors()
            totals = th.cat([count.reshape(1), sums]).to(device=device, dtype=th.float64)
            extremes = th.stack([min_log, -max_log]).to(device=device, dtype=th.float64)
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        dist.all_reduce(extremes, op=dist.ReduceOp.MIN)
        if totals[0].item() == 0:
            return None
        band = stats.band if stats is not None else DEFAULT_RATIO_BAND
        return RatioStats(totals[0], totals[1:5], extremes[0], -extremes[1], band)


def _count(stats: RatioStats) -> float:
    return float(stats.count.item() if isinstance(stats.count, th.Tensor) else stats.count)


_STATE = VerlDualState()


def dual_state() -> VerlDualState:
    """This process's :class:`VerlDualState`."""
    return _STATE


def reset_dual_state() -> VerlDualState:
    """Start over with a fresh state (a new run in the same process, or a test); returns it."""
    global _STATE
    _STATE = VerlDualState()
    return _STATE


def _after_any_optimizer_step(optimizer: th.optim.Optimizer, args: Any, kwargs: Any) -> None:
    _STATE.after_optimizer_step(optimizer)


register_optimizer_step_post_hook(_after_any_optimizer_step)

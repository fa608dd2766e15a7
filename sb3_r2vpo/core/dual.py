"""The dual variable ``lam`` (``var_coef``) of R2VPO: fixed, or tuned by projected dual ascent (METHOD.md, section 2)."""

import math
from typing import Any

import torch as th

from sb3_r2vpo.core.validation import check_positive, is_real_number

# Initial ``lam`` for ``var_coef="auto"``: see the R2VPO class docstring for the measurement behind it.
DEFAULT_AUTO_INIT = 1.0
#: The dual update rules of the adaptive mode: ``"additive"`` is the paper's Eq. 10, ``"log"`` steps ``log lam``.
VAR_COEF_UPDATES = ("additive", "log")
#: The lower end of ``lam``'s projection in the ``"log"`` update, as a fraction of ``var_coef_max``: a log-space step
#: cannot reach 0, and the floor keeps one minibatch above target able to restore the penalty within a few steps.
LOG_UPDATE_FLOOR_FRACTION = 1e-5


def check_var_coef_update(var_coef_update: str) -> str:
    """
    Check the name of a dual update rule.

    :param var_coef_update: one of :data:`VAR_COEF_UPDATES`
    :return: the name
    :raises ValueError: naming ``var_coef_update`` and the allowed names
    """
    if var_coef_update not in VAR_COEF_UPDATES:
        raise ValueError(f"var_coef_update={var_coef_update!r} is not one of {list(VAR_COEF_UPDATES)}")
    return var_coef_update


def check_var_coef_age_factor(factor: Any, replay_capacity: int) -> float:
    """
    Check the per-age weight of ``lam`` of a replay (R2VPO-OFF in SB3 and in the LLM trainer).

    :param factor: ``var_coef_age_factor``: data ``k`` iterations old are penalized with ``lam * factor**k``
    :param replay_capacity: how many rollouts (generations) the replay keeps
    :return: ``float(factor)``
    :raises ValueError: naming ``var_coef_age_factor``, if it is not a finite number > 0, or not 1 without stale data
    """
    checked = check_positive("var_coef_age_factor", factor)
    if checked != 1.0 and replay_capacity == 1:
        raise ValueError(
            f"var_coef_age_factor={factor} has no effect with replay_capacity=1 (all data trained on are fresh): keep "
            "past rollouts with replay_capacity > 1, or leave it at 1"
        )
    return checked


def var_coef_by_age(var_coef: float, factor: float, ages: th.Tensor) -> th.Tensor:
    """``lam * factor**age`` per sample, in float64 (the caller casts to its loss's dtype)."""
    return var_coef * factor ** ages.double()


def parse_var_coef(var_coef: float | str) -> tuple[float, bool]:
    """
    Parse the ``var_coef`` argument, in the style of SAC's ``ent_coef``.

    :param var_coef: a number ``>= 0`` (fixed ``lam``), ``"auto"`` (adaptive, starting at
        :data:`DEFAULT_AUTO_INIT`) or ``"auto_<init>"`` (adaptive, starting at ``init >= 0``)
    :return: ``(initial_value, adaptive)``
    :raises ValueError: naming ``var_coef`` and what it accepts
    """
    allowed = "a finite number >= 0, 'auto' or 'auto_<init>' with a finite init >= 0 (e.g. 'auto_0.1')"
    if isinstance(var_coef, str):
        if var_coef == "auto":
            return DEFAULT_AUTO_INIT, True
        if var_coef.startswith("auto_"):
            try:
                init = float(var_coef[len("auto_") :])
            except ValueError:
                raise ValueError(f"var_coef={var_coef!r} is malformed: expected {allowed}") from None
            if not (math.isfinite(init) and init >= 0.0):
                raise ValueError(f"var_coef={var_coef!r}: the initial value must be finite and >= 0; expected {allowed}")
            return init, True
        raise ValueError(f"var_coef={var_coef!r} is not understood: expected {allowed}")
    if not is_real_number(var_coef):
        raise ValueError(f"var_coef={var_coef!r} (type {type(var_coef).__name__}) is invalid: expected {allowed}")
    if not (math.isfinite(var_coef) and var_coef >= 0.0):
        raise ValueError(f"var_coef={var_coef!r} is out of range: expected {allowed}")
    return float(var_coef), False


class VarCoefController:
    """
    Holds ``lam`` and, in adaptive mode, updates it after every gradient step from ``V_hat``, the detached estimate
    of ``E[(r - 1)^2]`` of the batch that was just used. ``var_coef_update`` chooses the rule:

    - ``"additive"``: projected dual ascent, the paper's Eq. 10,
      ``lam <- clip(lam + var_coef_lr * (V_hat - target_var), var_coef_min, var_coef_max)`` (the paper:
      ``var_coef_min = 0``). While ``V_hat`` stays under the target, ``lam`` falls by a constant amount per step and
      can reach 0, where the trust region is gone.
    - ``"log"``: the same ascent on ``log lam`` with the constraint violation measured relative to the target,
      ``lam <- clip(lam * exp(var_coef_lr * (V_hat / target_var - 1)), floor, var_coef_max)`` with
      ``floor = max(var_coef_min, var_coef_max * LOG_UPDATE_FLOOR_FRACTION)``: ``lam`` shrinks at most by
      ``exp(-var_coef_lr)`` per step, never reaches 0, and grows by a factor that rises with how far the variance
      overshoots (with ``target_var = 0``, the end of an annealed schedule, any variance above 0 sends it to
      ``var_coef_max``).

    ``var_coef_min > 0`` keeps a fixed penalty of at least that weight while the variance is under target, and the
    dual step adds to it when the variance overshoots.

    In fixed mode :meth:`step` leaves ``lam`` unchanged.

    :param var_coef: see :func:`parse_var_coef`
    :param target_var: the target ratio variance ``delta`` (> 0)
    :param var_coef_lr: the dual step size ``eta_lam`` (>= 0)
    :param var_coef_max: the upper end of the projection (> 0, >= the initial value)
    :param var_coef_min: the lower end of the projection (>= 0, <= the initial value and ``var_coef_max``)
    :param var_coef_update: the update rule of the adaptive mode, one of :data:`VAR_COEF_UPDATES`
    :param resume_from: ``(lam, n_steps)`` to continue from (a saved model) instead of ``var_coef``'s initial value
    """

    def __init__(
        self,
        var_coef: float | str,
        *,
        target_var: float,
        var_coef_lr: float,
        var_coef_max: float,
        var_coef_update: str = "additive",
        var_coef_min: float = 0.0,
        resume_from: tuple[float, int] | None = None,
    ) -> None:
        init, self.adaptive = parse_var_coef(var_coef)
        self._target_var = check_positive("target_var", target_var)
        self.var_coef_lr = check_positive("var_coef_lr", var_coef_lr, allow_zero=True)
        self.var_coef_max = check_positive("var_coef_max", var_coef_max)
        self.var_coef_update = check_var_coef_update(var_coef_update)
        self.var_coef_min = check_positive("var_coef_min", var_coef_min, allow_zero=True)
        if self.var_coef_min > self.var_coef_max:
            raise ValueError(f"var_coef_min={var_coef_min} is above var_coef_max={self.var_coef_max}")
        self.n_steps = 0
        if resume_from is not None:
            init = check_positive("the saved lam (var_coef state)", resume_from[0], allow_zero=True)
            self.n_steps = int(resume_from[1])
            if init > self.var_coef_max:
                raise ValueError(
                    f"The saved lam={init:.6g} is above var_coef_max={self.var_coef_max}: pass a var_coef_max >= "
                    f"{init:.6g}, or a new var_coef (e.g. 'auto_{self.var_coef_max:g}') to restart lam from it"
                )
        elif init > self.var_coef_max:
            raise ValueError(
                f"var_coef={var_coef!r} starts above var_coef_max={self.var_coef_max}: the initial lam must be in "
                f"[0, var_coef_max]"
            )
        if self.adaptive and init < self.floor:
            source = "the saved lam" if resume_from is not None else f"var_coef={var_coef!r}"
            below = (
                f" with var_coef_update='log', which needs lam >= its floor max(var_coef_min, var_coef_max * "
                f"{LOG_UPDATE_FLOOR_FRACTION:g}) = {self.floor:.3g} (a log-space step cannot leave 0): pass a var_coef "
                "such as 'auto_1.0'"
                if self.var_coef_update == "log"
                else f", below var_coef_min={self.var_coef_min}"
            )
            raise ValueError(f"{source} starts lam at {init:.3g}{below}")
        self.value = init

    @property
    def floor(self) -> float:
        """The lower end of ``lam``'s projection: ``var_coef_min``, and for ``"log"`` at least a fraction of the max."""
        if self.var_coef_update == "log":
            return max(self.var_coef_min, self.var_coef_max * LOG_UPDATE_FLOOR_FRACTION)
        return self.var_coef_min

    @property
    def target_var(self) -> float:
        """The target ratio variance ``delta``; it may be changed between steps (schedules), to any value >= 0."""
        return self._target_var

    @target_var.setter
    def target_var(self, value: float) -> None:
        self._target_var = check_positive("target_var", value, allow_zero=True)

    def step(self, ratio_var: float) -> float:
        """
        One projected dual-ascent step (adaptive mode only).

        :param ratio_var: the batch estimate of ``E[(r - 1)^2]``
        :return: the new ``lam``
        """
        if not math.isfinite(ratio_var):
            raise ValueError(f"ratio_var={ratio_var!r} passed to the dual step must be finite")
        if self.adaptive:
            if self.var_coef_update == "log":
                # The exponent is capped so that one wild batch cannot overflow; the projection caps lam anyway. A
                # target of 0 (the end of an annealed schedule) puts any variance infinitely far above it.
                cap = math.log(1e300)
                if self.target_var > 0.0:
                    exponent = min(self.var_coef_lr * (ratio_var / self.target_var - 1.0), cap)
                else:
                    exponent = cap if ratio_var > 0.0 else -self.var_coef_lr
                proposal = self.value * math.exp(exponent)
            else:
                proposal = self.value + self.var_coef_lr * (ratio_var - self.target_var)
            self.value = min(max(proposal, self.floor), self.var_coef_max)
            self.n_steps += 1
        return self.value

    def state_dict(self) -> dict[str, Any]:
        """The controller's full state (JSON-friendly)."""
        return {
            "value": self.value,
            "adaptive": self.adaptive,
            "target_var": self.target_var,
            "var_coef_lr": self.var_coef_lr,
            "var_coef_max": self.var_coef_max,
            "var_coef_update": self.var_coef_update,
            "var_coef_min": self.var_coef_min,
            "n_steps": self.n_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """
        Restore a state produced by :meth:`state_dict`.

        :param state: the saved state
        """
        self.adaptive = bool(state["adaptive"])
        self.target_var = state["target_var"]
        self.var_coef_lr = check_positive("var_coef_lr", state["var_coef_lr"], allow_zero=True)
        self.var_coef_max = check_positive("var_coef_max", state["var_coef_max"])
        # States written before the log-space update existed were all additive.
        self.var_coef_update = check_var_coef_update(state.get("var_coef_update", "additive"))
        self.var_coef_min = check_positive("var_coef_min", state.get("var_coef_min", 0.0), allow_zero=True)
        value = check_positive("var_coef", state["value"], allow_zero=True)
        if value > self.var_coef_max:
            raise ValueError(f"Saved var_coef={value} is above var_coef_max={self.var_coef_max}")
        self.value = value
        self.n_steps = int(state["n_steps"])

    def __repr__(self) -> str:
        mode = (
            f"adaptive ({self.var_coef_update}), target_var={self.target_var}, lr={self.var_coef_lr}"
            if self.adaptive
            else "fixed"
        )
        return f"VarCoefController(value={self.value:.6g}, {mode}, max={self.var_coef_max})"

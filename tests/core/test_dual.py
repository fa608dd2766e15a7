import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_r2vpo.core import DEFAULT_AUTO_INIT, VarCoefController, parse_var_coef


def test_parse_var_coef() -> None:
    assert parse_var_coef(0.06) == (0.06, False)
    assert parse_var_coef(0) == (0.0, False)
    assert parse_var_coef("auto") == (DEFAULT_AUTO_INIT, True)
    assert parse_var_coef("auto_0.25") == (0.25, True)
    assert parse_var_coef("auto_0") == (0.0, True)


@pytest.mark.parametrize(
    "bad", [-0.1, math.nan, math.inf, "0.5", "autox", "auto_", "auto_abc", "auto_-1", "auto_inf", None, True, [1]]
)
def test_bad_var_coef(bad: object) -> None:
    with pytest.raises(ValueError, match="var_coef"):
        parse_var_coef(bad)  # type: ignore[arg-type]


def test_fixed_mode_never_moves() -> None:
    controller = VarCoefController(0.06, target_var=0.02, var_coef_lr=1.0, var_coef_max=10.0)
    for ratio_var in (0.0, 5.0, 100.0):
        assert controller.step(ratio_var) == 0.06


def test_adaptive_step_follows_eq_10() -> None:
    controller = VarCoefController("auto_1.0", target_var=0.02, var_coef_lr=2.0, var_coef_max=10.0)
    assert controller.step(0.07) == pytest.approx(1.0 + 2.0 * 0.05)
    assert controller.step(0.0) == pytest.approx(1.1 - 2.0 * 0.02)
    assert controller.n_steps == 2


@settings(max_examples=200, deadline=None)
@given(
    init=st.floats(0.0, 5.0),
    lr=st.floats(0.0, 1e3),
    target=st.floats(1e-6, 1.0),
    observations=st.lists(st.floats(0.0, 1e6), min_size=1, max_size=50),
)
def test_adaptive_steps_stay_in_range(init: float, lr: float, target: float, observations: list[float]) -> None:
    controller = VarCoefController(f"auto_{init!r}", target_var=target, var_coef_lr=lr, var_coef_max=5.0)
    for ratio_var in observations:
        value = controller.step(ratio_var)
        assert 0.0 <= value <= 5.0


def test_state_dict_round_trip() -> None:
    controller = VarCoefController("auto", target_var=0.05, var_coef_lr=0.3, var_coef_max=50.0)
    for ratio_var in (0.3, 0.2, 0.01):
        controller.step(ratio_var)
    restored = VarCoefController(0.0, target_var=1.0, var_coef_lr=0.0, var_coef_max=1.0)
    restored.load_state_dict(controller.state_dict())
    assert restored.state_dict() == controller.state_dict()
    assert restored.step(0.5) == controller.step(0.5)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"target_var": 0.0}, "target_var"),
        ({"target_var": -1.0}, "target_var"),
        ({"target_var": math.nan}, "target_var"),
        ({"target_var": "0.1"}, "target_var"),
        ({"var_coef_lr": -0.1}, "var_coef_lr"),
        ({"var_coef_lr": math.inf}, "var_coef_lr"),
        ({"var_coef_max": 0.0}, "var_coef_max"),
        ({"var_coef": "auto_20"}, "var_coef_max"),
    ],
)
def test_bad_controller_arguments(kwargs: dict, name: str) -> None:
    arguments = {"var_coef": "auto", "target_var": 0.02, "var_coef_lr": 0.1, "var_coef_max": 10.0, **kwargs}
    var_coef = arguments.pop("var_coef")
    with pytest.raises(ValueError, match=name):
        VarCoefController(var_coef, **arguments)


def test_non_finite_observation_is_rejected() -> None:
    controller = VarCoefController("auto", target_var=0.02, var_coef_lr=0.1, var_coef_max=10.0)
    with pytest.raises(ValueError, match="ratio_var"):
        controller.step(math.nan)


def test_log_update_steps_log_lam_by_the_relative_violation() -> None:
    controller = VarCoefController("auto_1.0", target_var=0.02, var_coef_lr=0.5, var_coef_max=10.0, var_coef_update="log")
    assert controller.step(0.06) == pytest.approx(math.exp(0.5 * 2.0))
    assert controller.step(0.0) == pytest.approx(math.exp(1.0) * math.exp(-0.5))
    assert controller.n_steps == 2


def test_log_update_never_reaches_zero_and_recovers_quickly() -> None:
    log = VarCoefController("auto_1.0", target_var=0.02, var_coef_lr=0.1, var_coef_max=100.0, var_coef_update="log")
    additive = VarCoefController("auto_1.0", target_var=0.02, var_coef_lr=0.1, var_coef_max=100.0)
    for _ in range(2000):  # a long stretch of small updates: the variance stays at 0
        log.step(0.0)
        additive.step(0.0)
    assert additive.value == 0.0
    assert log.value == pytest.approx(log.floor) and log.floor > 0
    for _ in range(20):  # then batches at 5x the target
        log.step(0.1)
        additive.step(0.1)
    assert log.value > 100 * log.floor
    assert log.value > additive.value


@settings(max_examples=200, deadline=None)
@given(
    init=st.floats(1e-3, 5.0),
    lr=st.floats(0.0, 1e3),
    target=st.floats(1e-6, 1.0),
    observations=st.lists(st.floats(0.0, 1e6), min_size=1, max_size=50),
)
def test_log_steps_stay_in_range(init: float, lr: float, target: float, observations: list[float]) -> None:
    controller = VarCoefController(
        f"auto_{init!r}", target_var=target, var_coef_lr=lr, var_coef_max=5.0, var_coef_update="log"
    )
    for ratio_var in observations:
        value = controller.step(ratio_var)
        assert controller.floor <= value <= 5.0


def test_log_update_refuses_a_start_below_its_floor() -> None:
    with pytest.raises(ValueError, match=r"var_coef='auto_0'.*var_coef_update='log'"):
        VarCoefController("auto_0", target_var=0.02, var_coef_lr=0.1, var_coef_max=10.0, var_coef_update="log")
    # A fixed lam of 0 is not updated, so the floor does not apply.
    assert VarCoefController(0.0, target_var=0.02, var_coef_lr=0.1, var_coef_max=10.0, var_coef_update="log").value == 0


def test_unknown_update_rule() -> None:
    with pytest.raises(ValueError, match=r"var_coef_update='sgd'.*additive.*log"):
        VarCoefController("auto", target_var=0.02, var_coef_lr=0.1, var_coef_max=10.0, var_coef_update="sgd")


def test_state_without_update_rule_loads_as_additive() -> None:
    controller = VarCoefController("auto", target_var=0.05, var_coef_lr=0.3, var_coef_max=50.0, var_coef_update="log")
    state = controller.state_dict()
    assert state["var_coef_update"] == "log"
    del state["var_coef_update"]
    controller.load_state_dict(state)
    assert controller.var_coef_update == "additive"


def test_log_update_at_a_target_of_zero() -> None:
    controller = VarCoefController("auto_1.0", target_var=0.02, var_coef_lr=0.5, var_coef_max=10.0, var_coef_update="log")
    controller.target_var = 0.0  # the end of an annealed schedule
    assert controller.step(0.0) == pytest.approx(math.exp(-0.5))
    assert controller.step(1e-9) == 10.0


@pytest.mark.parametrize("update", ["additive", "log"])
def test_var_coef_min_is_the_floor_of_both_updates(update: str) -> None:
    controller = VarCoefController(
        "auto_2.0", target_var=0.02, var_coef_lr=0.5, var_coef_max=10.0, var_coef_update=update, var_coef_min=0.7
    )
    for _ in range(200):
        controller.step(0.0)
    assert controller.value == controller.floor == 0.7
    assert controller.step(1.0) > 0.7  # an overshoot adds to the floor


def test_bad_var_coef_min() -> None:
    with pytest.raises(ValueError, match="var_coef_min=-1"):
        VarCoefController("auto", target_var=0.02, var_coef_lr=0.1, var_coef_max=10.0, var_coef_min=-1)
    with pytest.raises(ValueError, match="var_coef_min=20 is above var_coef_max=10"):
        VarCoefController("auto", target_var=0.02, var_coef_lr=0.1, var_coef_max=10.0, var_coef_min=20)
    with pytest.raises(ValueError, match=r"below var_coef_min=0\.5"):
        VarCoefController("auto_0.1", target_var=0.02, var_coef_lr=0.1, var_coef_max=10.0, var_coef_min=0.5)

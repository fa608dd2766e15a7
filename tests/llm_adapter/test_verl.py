"""R2VPO as a verl policy loss, against the real verl (installed by the [verl] extra; CI runs these in that env)."""

import math
import os
import socket

import numpy as np
import pytest
import torch as th
import torch.distributed as dist
import torch.multiprocessing as mp

pytest.importorskip("verl", reason="needs the [verl] extra (CI installs it in its own environment)")

from hydra.errors import InstantiationException
from omegaconf import OmegaConf
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import FSDPActorConfig

from llm_adapter.verl import DUAL_STATE_KEY, REGISTERED_LOSSES, R2VPOPolicyLossConfig, dual_state
from llm_adapter.verl.dual import reset_dual_state
from sb3_r2vpo.core.dual import VarCoefController
from sb3_r2vpo.core.objectives import gppo_objective, r2vpo_objective, spo_objective, topr_objective

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
SETTINGS = {"var_coef": "auto_0.5", "target_var": 1e-4, "var_coef_lr": 2.0}


@pytest.fixture(autouse=True)
def fresh_dual_state():
    reset_dual_state()
    yield
    reset_dual_state()


def actor_config(loss_mode: str = "r2vpo", **global_batch_info) -> FSDPActorConfig:
    config = FSDPActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=2,
        policy_loss=R2VPOPolicyLossConfig(loss_mode=loss_mode, **SETTINGS),
    )
    config.global_batch_info.update(global_batch_info)
    return config


def micro_batch(seed: int, batch: int = 3, length: int = 5, scale: float = 0.3) -> dict[str, th.Tensor]:
    generator = th.Generator().manual_seed(seed)
    old = -th.rand(batch, length, generator=generator, dtype=th.float64) * 2
    mask = th.ones(batch, length, dtype=th.bool)
    mask[0, 3:] = False  # a short response
    mask[-1, 1:] = False
    return {
        "old_log_prob": old,
        "log_prob": (old + scale * th.randn(batch, length, generator=generator, dtype=th.float64)).requires_grad_(),
        "advantages": th.randn(batch, length, generator=generator, dtype=th.float64),
        "response_mask": mask,
        "rollout_is_weights": th.rand(batch, length, generator=generator, dtype=th.float64) + 0.5,
    }


def reference_aggregate(per_token: th.Tensor, mask: th.Tensor, mode: str, info: dict) -> th.Tensor:
    """verl's aggregation modes written out from their documentation, independently of verl's agg_loss."""
    m = mask.to(per_token.dtype)
    dp = info.get("dp_size", 1)
    if mode == "token-mean":
        return (per_token * m).sum() / info.get("batch_num_tokens", m.sum()) * dp
    if mode == "token-sum":
        return (per_token * m).sum() * dp
    sequences = m.sum(-1) > 0
    n_sequences = info.get("global_batch_size", sequences.sum())
    if mode == "seq-mean-token-mean":
        means = (per_token * m).sum(-1) / m.sum(-1).clamp(min=1e-30)
        return means[sequences].sum() / n_sequences * dp
    loss = (per_token * m).sum(-1)[sequences].sum() / n_sequences * dp
    if mode == "seq-mean-token-sum-norm":
        loss = loss / (info.get("loss_scale_factor") or per_token.shape[-1])
    return loss


def test_every_core_objective_verl_lacks_is_registered() -> None:
    for name in ("r2vpo", "spo", "gppo", "topr"):
        assert get_policy_loss_fn(name) is REGISTERED_LOSSES[name]


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "rollout_is_weights"])
@pytest.mark.parametrize("global_info", [{}, {"dp_size": 2, "batch_num_tokens": 40, "global_batch_size": 9}])
@pytest.mark.parametrize("mode", AGG_MODES)
def test_r2vpo_loss_and_gradient_equal_the_core(mode: str, global_info: dict, weighted: bool) -> None:
    if global_info and mode == "seq-mean-token-sum-norm":
        global_info = {**global_info, "loss_scale_factor": 7}
    data = micro_batch(0)
    weights = data["rollout_is_weights"] if weighted else None
    config = actor_config(**global_info)
    loss, metrics = get_policy_loss_fn("r2vpo")(
        old_log_prob=data["old_log_prob"],
        log_prob=data["log_prob"],
        advantages=data["advantages"],
        response_mask=data["response_mask"],
        loss_agg_mode=mode,
        config=config,
        rollout_is_weights=weights,
    )
    (gradient,) = th.autograd.grad(loss, data["log_prob"])

    log_prob = data["log_prob"].detach().clone().requires_grad_()
    per_token, _ = r2vpo_objective(log_prob, data["old_log_prob"], data["advantages"], var_coef=0.5)
    if weighted:
        per_token = per_token * weights
    expected = reference_aggregate(per_token, data["response_mask"], mode, global_info)
    (expected_gradient,) = th.autograd.grad(expected, log_prob)
    th.testing.assert_close(loss, expected)
    th.testing.assert_close(gradient, expected_gradient)
    assert gradient[~data["response_mask"]].abs().max() == 0  # masked tokens get no gradient
    assert metrics["r2vpo/lam"] == 0.5
    masked = data["response_mask"]
    ratio = th.exp(data["log_prob"].detach() - data["old_log_prob"])[masked]
    assert metrics["r2vpo/ratio_var"] == pytest.approx(float(((ratio - 1) ** 2).mean()))
    assert metrics["r2vpo/ratio_outside"] == pytest.approx(float(((ratio - 1).abs() > 0.2).double().mean()))


@pytest.mark.parametrize(
    ("name", "objective", "coefs"),
    [
        ("spo", spo_objective, {"clip_range": 0.2}),
        ("gppo", gppo_objective, {"clip_range": 0.2, "clip_range_high": 0.28}),
        ("topr", topr_objective, {"truncation": 1.0}),
    ],
)
def test_comparison_objectives_equal_the_core(name: str, objective, coefs: dict) -> None:
    data = micro_batch(1)
    config = FSDPActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=2, clip_ratio_high=0.28)
    loss, metrics = get_policy_loss_fn(name)(
        data["old_log_prob"], data["log_prob"], data["advantages"], data["response_mask"], "token-mean", config, None
    )
    per_token, _ = objective(data["log_prob"], data["old_log_prob"], data["advantages"], **coefs)
    th.testing.assert_close(loss, reference_aggregate(per_token, data["response_mask"], "token-mean", {}))
    assert math.isfinite(metrics[f"{name}/ratio_var"])


def train_steps(batches_per_step: list[list[int]], parameters: th.Tensor, optimizer: th.optim.Optimizer) -> None:
    """Micro-batches (by seed) of each optimizer step, through the registered loss, as verl's engine runs them."""
    config = actor_config(dp_size=1)
    for seeds in batches_per_step:
        optimizer.zero_grad()
        for seed in seeds:
            data = micro_batch(seed, scale=0.0)
            log_prob = data["old_log_prob"] + parameters[seed % parameters.shape[0]]
            loss, _ = get_policy_loss_fn("r2vpo")(
                data["old_log_prob"], log_prob, data["advantages"], data["response_mask"], "token-mean", config, None
            )
            loss.backward()
        optimizer.step()


def expected_controller(batches_per_step: list[list[int]], parameter_history: list[th.Tensor]) -> VarCoefController:
    """The core's controller stepped once per optimizer step on the merged statistics of its micro-batches."""
    controller = R2VPOPolicyLossConfig(**SETTINGS).controller()
    for seeds, parameters in zip(batches_per_step, parameter_history, strict=True):
        controller.step(_ratio_var(seeds, parameters))
    return controller


def _ratio_var(seeds: list[int], parameters: th.Tensor) -> float:
    stats = None
    for seed in seeds:
        data = micro_batch(seed, scale=0.0)
        log_prob = data["old_log_prob"] + parameters[seed % parameters.shape[0]]
        _, batch_stats = r2vpo_objective(log_prob, data["old_log_prob"], data["advantages"], mask=data["response_mask"])
        stats = batch_stats if stats is None else stats.merge(batch_stats)
    assert stats is not None
    return stats.summarize()["ratio_var"]


def test_lam_steps_once_per_optimizer_step_from_all_its_micro_batches() -> None:
    parameters = (0.05 * th.randn(4, 3, 5, dtype=th.float64)).requires_grad_()
    optimizer = th.optim.SGD([parameters], lr=0.5)
    steps = [[0, 1, 2], [3, 0], [1, 2, 3, 0]]
    history = []
    for step in steps:
        history.append(parameters.detach().clone())
        train_steps([step], parameters, optimizer)
    controller = dual_state().controller
    assert controller is not None and controller.n_steps == len(steps)  # not 9 micro-batches
    expected = expected_controller(steps, history)
    assert controller.value == pytest.approx(expected.value, rel=1e-12)
    assert controller.value != 0.5
    assert optimizer.param_groups[0][DUAL_STATE_KEY] == controller.state_dict()


def test_forward_only_calls_do_not_count() -> None:
    data = micro_batch(2)
    with th.no_grad():
        get_policy_loss_fn("r2vpo")(
            data["old_log_prob"],
            data["log_prob"],
            data["advantages"],
            data["response_mask"],
            "token-mean",
            actor_config(),
            None,
        )
    assert dual_state().pending is None


def test_checkpoint_and_resume_restore_lam(tmp_path) -> None:
    parameters = (0.05 * th.randn(4, 3, 5, dtype=th.float64)).requires_grad_()
    optimizer = th.optim.AdamW([parameters], lr=0.05)
    train_steps([[0, 1], [2, 3]], parameters, optimizer)
    saved = dual_state().controller.state_dict()  # type: ignore[union-attr]
    th.save({"optimizer": optimizer.state_dict(), "parameters": parameters.detach()}, tmp_path / "checkpoint.pt")

    # A new process: fresh controller, optimizer restored the way verl's checkpoint manager restores it.
    reset_dual_state()
    checkpoint = th.load(tmp_path / "checkpoint.pt", weights_only=False)
    resumed = checkpoint["parameters"].clone().requires_grad_()
    resumed_optimizer = th.optim.AdamW([resumed], lr=0.05)
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    assert resumed_optimizer.param_groups[0][DUAL_STATE_KEY] == saved
    before_step = resumed.detach().clone()
    train_steps([[1, 3]], resumed, resumed_optimizer)

    controller = dual_state().controller
    assert controller is not None and controller.n_steps == saved["n_steps"] + 1
    expected = VarCoefController(SETTINGS["var_coef"], target_var=1e-4, var_coef_lr=2.0, var_coef_max=100.0)
    expected.load_state_dict(saved)
    expected.step(_ratio_var([1, 3], before_step))
    assert controller.value == pytest.approx(expected.value, rel=1e-12)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _distributed_worker(rank: int, world_size: int, port: int, steps_by_rank: list, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        th.manual_seed(0)  # the same initial parameters on both ranks, as after DDP/FSDP's broadcast
        parameters = (0.05 * th.randn(4, 3, 5, dtype=th.float64)).requires_grad_()
        optimizer = th.optim.SGD([parameters], lr=0.0)  # lr 0: parameters stay equal across ranks without DDP
        train_steps(steps_by_rank[rank], parameters, optimizer)
        controller = dual_state().controller
        assert controller is not None
        np.save(os.path.join(out_dir, f"rank{rank}.npy"), np.array([controller.value, controller.n_steps]))
    finally:
        dist.destroy_process_group()


def test_lam_agrees_across_two_processes_with_uneven_micro_batches(tmp_path) -> None:
    # Dynamic batch sizes: rank 0 runs 1 and 3 micro-batches, rank 1 runs 2 and 1, in the same two optimizer steps.
    steps_by_rank = [[[0], [1, 2, 3]], [[1, 2], [0]]]
    mp.start_processes(
        _distributed_worker, args=(2, _free_port(), steps_by_rank, str(tmp_path)), nprocs=2, start_method="spawn"
    )
    rank0, rank1 = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    assert rank0[1] == rank1[1] == 2
    assert rank0[0] == rank1[0]
    th.manual_seed(0)
    parameters = 0.05 * th.randn(4, 3, 5, dtype=th.float64)
    union = [steps_by_rank[0][step] + steps_by_rank[1][step] for step in range(2)]
    expected = expected_controller(union, [parameters, parameters])
    assert rank0[0] == pytest.approx(expected.value, rel=1e-12)


def test_settings_come_through_verls_config_system() -> None:
    """What hydra gives verl for ``policy_loss`` (verl's yaml plus the user's overrides) builds our config."""
    node = OmegaConf.create(
        {
            "_target_": "llm_adapter.verl.R2VPOPolicyLossConfig",
            "loss_mode": "r2vpo",
            "var_coef": "auto_0.3",
            "target_var": 0.01,
        }
    )
    config = omega_conf_to_dataclass(node)
    assert isinstance(config, R2VPOPolicyLossConfig)
    assert (config.var_coef, config.target_var, config.controller().value) == ("auto_0.3", 0.01, 0.3)
    # hydra wraps the ValueError raised before any worker starts; its message names the parameter and the range
    with pytest.raises(InstantiationException, match=r"target_var=-1\.0 is out of range: expected a finite number > 0"):
        omega_conf_to_dataclass(OmegaConf.create({"_target_": "llm_adapter.verl.R2VPOPolicyLossConfig", "target_var": -1}))


def test_r2vpo_without_its_config_is_a_clear_error() -> None:
    data = micro_batch(0)
    plain = FSDPActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=2)
    with pytest.raises(TypeError, match=r"_target_=llm_adapter\.verl\.R2VPOPolicyLossConfig"):
        get_policy_loss_fn("r2vpo")(
            data["old_log_prob"], data["log_prob"], data["advantages"], data["response_mask"], "token-mean", plain, None
        )


def test_optimizer_steps_through_verls_actor_loss_with_a_tiny_model(tiny_model_dir) -> None:
    """
    verl's actor loss (``verl.workers.utils.losses.ppo_loss``, what its TrainingWorker runs per micro-batch) on a tiny
    Qwen2, three AdamW steps of two micro-batches: ``lam`` moves exactly as the core's controller says. (verl's
    engines, which would run this loop themselves, register only for CUDA and NPU devices.)
    """
    from tensordict import TensorDict
    from transformers import AutoModelForCausalLM
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    generator = th.Generator().manual_seed(0)
    prompt_len, response_len, vocab = 3, 4, model.config.vocab_size

    def make_micro_batch(lengths: list[int]) -> TensorDict:
        batch = len(lengths)
        prompts = th.randint(1, vocab, (batch, prompt_len), generator=generator)
        responses = th.randint(1, vocab, (batch, response_len), generator=generator)
        response_mask = (th.arange(response_len)[None, :] < th.tensor(lengths)[:, None]).long()
        data = TensorDict(
            {
                "prompts": prompts,
                "responses": responses,
                "attention_mask": th.cat([th.ones(batch, prompt_len, dtype=th.long), response_mask], dim=1),
                "response_mask": response_mask,
                "advantages": th.randn(batch, 1, generator=generator).expand(batch, response_len).contiguous(),
            },
            batch_size=[batch],
        )
        data["old_log_probs"] = th.zeros(batch, response_len)
        return data

    def flat_log_probs(data: TensorDict) -> th.Tensor:
        """Per-token log-probs in verl's no-padding layout: position i holds log p(token i + 1 | tokens <= i)."""
        values = []
        for row in range(data.batch_size[0]):
            length = prompt_len + int(data["response_mask"][row].sum())
            tokens = th.cat([data["prompts"][row], data["responses"][row]])[:length]
            logits = model(tokens[None]).logits[0].float()
            next_tokens = th.cat([tokens[1:], tokens[:1]])  # the last position is never read by verl
            values.append(th.log_softmax(logits, dim=-1).gather(-1, next_tokens[:, None]).squeeze(-1))
        return th.cat(values)

    def response_log_probs(data: TensorDict) -> th.Tensor:
        out = th.zeros(data.batch_size[0], response_len)
        flat, offset = flat_log_probs(data).detach(), 0
        for row in range(data.batch_size[0]):
            length = int(data["response_mask"][row].sum())
            out[row, :length] = flat[offset + prompt_len - 1 : offset + prompt_len - 1 + length]
            offset += prompt_len + length
        return out

    # One generation: behavior log-probs from the model before any update (verl's compute_log_prob).
    micro_batches = [make_micro_batch([4, 2]), make_micro_batch([3, 4, 1])]
    with th.no_grad():
        for data in micro_batches:
            data["old_log_probs"] = response_log_probs(data)
    tokens = sum(int(data["response_mask"].sum()) for data in micro_batches)
    config = FSDPActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=3,
        policy_loss=R2VPOPolicyLossConfig(var_coef="auto_0.5", target_var=1e-6, var_coef_lr=50.0),
    )
    optimizer = th.optim.AdamW(model.parameters(), lr=3e-2)
    controller = VarCoefController("auto_0.5", target_var=1e-6, var_coef_lr=50.0, var_coef_max=100.0)
    logged_lams = []
    for _ in range(3):
        optimizer.zero_grad()
        step_stats = None
        for data in micro_batches:
            tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=tokens, global_batch_size=5)
            log_probs = flat_log_probs(data)
            loss, metrics = ppo_loss(config, {"log_probs": log_probs}, data)
            loss.backward()
            logged_lams.append(metrics["r2vpo/lam"].values[0])
            _, stats = r2vpo_objective(
                response_log_probs(data), data["old_log_probs"], data["advantages"], mask=data["response_mask"].bool()
            )
            step_stats = stats if step_stats is None else step_stats.merge(stats)
        optimizer.step()
        assert step_stats is not None
        controller.step(step_stats.summarize()["ratio_var"])

    state = dual_state().controller
    assert state is not None and state.n_steps == 3
    assert state.value == pytest.approx(controller.value, rel=1e-5)
    # One lam per optimizer step. The first step is on-policy (ratio exactly 1, variance 0 < target): lam falls by
    # var_coef_lr * target_var; once the policy has moved, the variance exceeds the tiny target and lam rises.
    assert logged_lams[0] == logged_lams[1] == 0.5
    assert logged_lams[2] == logged_lams[3] == pytest.approx(0.5 - 50.0 * 1e-6)
    assert logged_lams[4] == logged_lams[5] > logged_lams[2] and state.value > logged_lams[4]


def test_installing_the_extra_registers_the_losses_in_every_verl_process() -> None:
    """verl loads the ``verl.plugins`` entry point on ``import verl``, as each Ray worker does: nothing else is needed."""
    import subprocess
    import sys

    code = (
        "import sys, verl; from verl.trainer.ppo.core_algos import get_policy_loss_fn; "
        "print(get_policy_loss_fn('r2vpo').__module__, 'llm_adapter.verl' in sys.modules)"
    )
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "auto"}
    env.pop("VERL_USE_EXTERNAL_MODULES", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split()[-2:] == ["llm_adapter.verl.losses", "True"]

"""
Cost of the R2VPO objective against GRPO's clipped objective in the trainer's fused log-prob + loss step (forward
and backward), on the same batch: hidden states, ``lm_head`` (Qwen2 vocabulary), sampled tokens, behavior
log-probs and advantages. Interleaved in ABBA order over repeats; reports the median per-pair time ratio
R2VPO / GRPO (target: <= 1.05). The objective is the only difference; the rest of a real step (the transformer
backbone) would only dilute the ratio further, so this is the strict version of the comparison.

    python -m benchmarks.llm_objective_overhead --repeats 10

Writes ``results/llm_objective_overhead/<device>.json`` and ``.png``.
"""

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from benchmarks.common import RESULTS_DIR, save_figure_and_json, versions
from llm_adapter.logprobs import fused_objective_loss
from llm_adapter.objectives import LLM_OBJECTIVES
from sb3_r2vpo.core import aggregation_weights

OUT_DIR = RESULTS_DIR / "llm_objective_overhead"


def make_batch(batch: int, seq: int, vocab: int, hidden: int, device: th.device) -> dict[str, th.Tensor]:
    """A fixed batch; behavior log-probs perturbed so that ratios differ from 1 and the clip binds sometimes."""
    generator = th.Generator().manual_seed(0)
    weight = (th.randn(vocab, hidden, generator=generator) * hidden**-0.5).to(device).requires_grad_(True)
    hidden_states = th.randn(batch, seq, hidden, generator=generator).to(device).requires_grad_(True)
    targets = th.randint(vocab, (batch, seq), generator=generator).to(device)
    mask = (th.rand(batch, seq, generator=generator) < 0.9).to(device)
    advantages = th.randn(batch, 1, generator=generator).expand(batch, seq).to(device)
    behavior = (-12.0 + 0.3 * th.randn(batch, seq, generator=generator)).to(device)
    return {
        "weight": weight,
        "hidden": hidden_states,
        "targets": targets,
        "mask": mask,
        "advantages": advantages,
        "behavior": behavior,
    }


def time_step(name: str, data: dict[str, th.Tensor], chunk_size: int) -> float:
    """One fused forward + backward with the objective ``name``; returns seconds."""
    objective = LLM_OBJECTIVES[name]
    coefficients = objective.coefficients(var_coef=0.5, clip_range=0.2, clip_range_high=None)
    weights = aggregation_weights(data["mask"], mode="token_mean")
    data["weight"].grad = data["hidden"].grad = None
    if data["hidden"].is_cuda:
        th.cuda.synchronize()
    start = time.perf_counter()
    fused = fused_objective_loss(
        data["hidden"],
        data["weight"],
        data["targets"],
        data["behavior"],
        data["advantages"],
        mask=data["mask"],
        token_weights=weights,
        objective=objective.function,
        coefficients=coefficients,
        chunk_size=chunk_size,
    )
    fused.loss.backward()
    fused.stats.summarize()  # the trainer's one synchronization per step
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="ABBA pairs")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if th.cuda.is_available() else "cpu")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where the JSON and PNG go")
    args = parser.parse_args(argv)
    device = th.device(args.device)
    data = make_batch(args.batch, args.seq, args.vocab, args.hidden, device)
    time_step("r2vpo", data, args.chunk_size)  # warm-up
    time_step("grpo", data, args.chunk_size)
    ratios, r2vpo_times, grpo_times = [], [], []
    for repeat in range(args.repeats):
        order = ("r2vpo", "grpo", "grpo", "r2vpo") if repeat % 2 == 0 else ("grpo", "r2vpo", "r2vpo", "grpo")
        times: dict[str, list[float]] = {"r2vpo": [], "grpo": []}
        for name in order:
            times[name].append(time_step(name, data, args.chunk_size))
        r2vpo_times.append(float(np.mean(times["r2vpo"])))
        grpo_times.append(float(np.mean(times["grpo"])))
        ratios.append(r2vpo_times[-1] / grpo_times[-1])
    median = float(np.median(ratios))
    q25, q75 = (float(q) for q in np.percentile(ratios, [25, 75]))
    print(
        f"R2VPO / GRPO step time: median {median:.3f} (IQR {q25:.3f}-{q75:.3f}) over {args.repeats} ABBA pairs; "
        f"R2VPO {np.median(r2vpo_times) * 1e3:.1f} ms, GRPO {np.median(grpo_times) * 1e3:.1f} ms per step"
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.boxplot([ratios], tick_labels=["R2VPO / GRPO"])
    ax.axhline(1.05, color="red", linestyle="--", label="target 1.05")
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set(
        ylabel="time ratio per step (same batch)", title=f"{args.device}: {args.batch}x{args.seq} tokens, vocab {args.vocab}"
    )
    ax.legend()
    payload = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "median_ratio": median,
        "iqr": [q25, q75],
        "ratios": ratios,
        "r2vpo_seconds": r2vpo_times,
        "grpo_seconds": grpo_times,
        "versions": versions(),
    }
    name = args.device.replace(":", "")
    save_figure_and_json(fig, args.out_dir, f"{name}.png", f"{name}.json", payload)
    return payload


if __name__ == "__main__":
    main()

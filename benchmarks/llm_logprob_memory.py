"""
Peak memory and time of the per-token log-probs + R2VPO loss, forward and backward, three ways: naive (full
``[batch, time, vocab]`` logits, ``log_softmax``, gather), chunked log-probs (``lm_head`` applied ``chunk_size``
tokens at a time, logits recomputed in the backward pass) and fused (the trainer's path: log-probs, objective and
gradient formed chunk by chunk in one pass, no recomputation). Qwen2's vocabulary (151,936), sequence 1,024, the
hidden size of Qwen2.5-0.5B (896) by default; several batch sizes. Target: the training path's peak <= 1/4 of
naive at no more than naive time.

Each measurement runs in a fresh subprocess: on CPU the extra peak is the process's peak resident set (``VmHWM``,
reset after the inputs are built) over its resident set at that point; on CUDA ``max_memory_allocated`` over the
memory allocated for the inputs (the ``lm_head`` weight, hidden states).
Both paths count the ``lm_head`` weight gradient (545 MB in float32 at the default sizes), which any trainer holds.

    python -m benchmarks.llm_logprob_memory --batch-sizes 1 2 4            # CPU, float32
    python -m benchmarks.llm_logprob_memory --device cuda --dtype bfloat16 --batch-sizes 1 2 4 8

Writes ``results/llm_logprob_memory/<device>_<dtype>.json`` and ``.png``.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from benchmarks.common import RESULTS_DIR, save_figure_and_json, versions
from llm_adapter.logprobs import chunked_token_log_probs, fused_objective_loss, naive_token_log_probs
from sb3_r2vpo.core import aggregate_loss, aggregation_weights, r2vpo_objective

OUT_DIR = RESULTS_DIR / "llm_logprob_memory"
MODES = ("naive", "chunked", "fused")
#: Liger-Kernel's fused linear GRPO loss (clipped surrogate, bnpo aggregation), measured where it is installed (CUDA).
LIGER = "liger"


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak(device: th.device) -> int:
    """Reset the peak counter and return the memory in use now (the baseline)."""
    if device.type == "cuda":
        th.cuda.synchronize(device)
        th.cuda.reset_peak_memory_stats(device)
        return th.cuda.memory_allocated(device)
    # Writing 5 to clear_refs resets the peak resident set (VmHWM) to the current one (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return _status_bytes("VmRSS")


def _peak_bytes(device: th.device) -> int:
    if device.type == "cuda":
        return th.cuda.max_memory_allocated(device)
    return _status_bytes("VmHWM")


def measure_once(
    mode: str, batch: int, seq: int, vocab: int, hidden: int, chunk_size: int, device_name: str, dtype_name: str, repeats: int
) -> dict[str, float]:
    """Run in a fresh process: allocate the inputs, then time forward + R2VPO loss + backward ``repeats`` times."""
    device, dtype = th.device(device_name), getattr(th, dtype_name)
    th.manual_seed(0)
    # Filled in place: a temporary copy here would raise the process's peak before the measurement starts.
    weight = th.empty(vocab, hidden, device=device, dtype=dtype).normal_(std=hidden**-0.5).requires_grad_(True)
    hidden_states = th.randn(batch, seq, hidden, device=device).to(dtype).requires_grad_(True)
    targets = th.randint(vocab, (batch, seq), device=device)
    mask = th.ones(batch, seq, dtype=th.bool, device=device)
    advantages = th.randn(batch, 1, device=device).expand(batch, seq)
    with th.no_grad():
        behavior = naive_token_log_probs(hidden_states[:1, :8], weight, targets[:1, :8]).mean().expand(batch, seq).clone()
    baseline = _reset_peak(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        if mode == LIGER:
            from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

            liger_loss = LigerFusedLinearGRPOLoss(beta=0.0, use_ref_model=False, loss_type="bnpo")
            loss, _ = liger_loss(hidden_states, weight, targets, mask.long(), advantages[:, 0], old_per_token_logps=behavior)
        elif mode == "fused":
            weights = aggregation_weights(mask, mode="token_mean")
            loss = fused_objective_loss(
                hidden_states,
                weight,
                targets,
                behavior,
                advantages,
                mask=mask,
                token_weights=weights,
                objective=r2vpo_objective,
                coefficients={"var_coef": 0.5},
                chunk_size=chunk_size,
            ).loss
        else:
            if mode == "chunked":
                log_probs = chunked_token_log_probs(hidden_states, weight, targets, chunk_size=chunk_size)
            else:
                log_probs = naive_token_log_probs(hidden_states, weight, targets)
            per_token, _ = r2vpo_objective(log_probs, behavior, advantages, mask=mask, var_coef=0.5)
            loss = aggregate_loss(per_token, mode="token_mean", mask=mask)
        loss.backward()
        if device.type == "cuda":
            th.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        weight.grad = hidden_states.grad = None
        del loss
    return {
        "peak_bytes": float(_peak_bytes(device) - baseline),
        "seconds": float(np.median(times[1:] if repeats > 1 else times)),
    }


def measure(mode: str, batch: int, args: argparse.Namespace) -> dict[str, float]:
    """One measurement in a subprocess (so peaks do not leak between measurements)."""
    call = [mode, batch, args.seq, args.vocab, args.hidden, args.chunk_size, args.device, args.dtype, args.repeats]
    code = f"import json; from benchmarks.llm_logprob_memory import measure_once; print(json.dumps(measure_once(*{call!r})))"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per measurement (the first is a warm-up)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where the JSON and PNG go")
    parser.add_argument(
        "--liger", action="store_true", help="also measure Liger-Kernel's LigerFusedLinearGRPOLoss (needs liger_kernel)"
    )
    args = parser.parse_args(argv)

    modes = (*MODES, LIGER) if args.liger else MODES
    rows = []
    for batch in args.batch_sizes:
        results = {mode: measure(mode, batch, args) for mode in modes}
        # Both paths hold the float32 lm_head weight gradient; the rest is what the logits cost.
        weight_grad_mb = args.vocab * args.hidden * 4 / 2**20
        row: dict[str, float] = {"batch": batch, "tokens": batch * args.seq, "lm_head_grad_mb": weight_grad_mb}
        for mode, result in results.items():
            row[f"{mode}_peak_mb"] = result["peak_bytes"] / 2**20
            row[f"{mode}_seconds"] = result["seconds"]
            if mode != "naive":
                row[f"{mode}_memory_ratio"] = result["peak_bytes"] / results["naive"]["peak_bytes"]
                row[f"{mode}_memory_ratio_without_lm_head_grad"] = (row[f"{mode}_peak_mb"] - weight_grad_mb) / (
                    row["naive_peak_mb"] - weight_grad_mb
                )
                row[f"{mode}_time_ratio"] = result["seconds"] / results["naive"]["seconds"]
        rows.append(row)
        print(
            f"batch {batch}: peak MB naive {row['naive_peak_mb']:.0f}, chunked {row['chunked_peak_mb']:.0f} "
            f"({row['chunked_memory_ratio']:.3f}x), fused {row['fused_peak_mb']:.0f} ({row['fused_memory_ratio']:.3f}x, "
            f"{row['fused_memory_ratio_without_lm_head_grad']:.3f}x without the {weight_grad_mb:.0f} MB lm_head gradient); "
            f"seconds naive {row['naive_seconds']:.2f}, chunked {row['chunked_seconds']:.2f} "
            f"({row['chunked_time_ratio']:.3f}x), fused {row['fused_seconds']:.2f} ({row['fused_time_ratio']:.3f}x)",
            flush=True,
        )
        if LIGER in results:
            row["fused_time_vs_liger"] = results["fused"]["seconds"] / results[LIGER]["seconds"]
            row["fused_memory_vs_liger"] = results["fused"]["peak_bytes"] / results[LIGER]["peak_bytes"]
            print(
                f"batch {batch}: Liger peak MB {row['liger_peak_mb']:.0f}, {row['liger_seconds']:.3f} s; fused / Liger: "
                f"time {row['fused_time_vs_liger']:.3f}x, memory {row['fused_memory_vs_liger']:.3f}x",
                flush=True,
            )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(10, 4))
    batches = [r["batch"] for r in rows]
    labels = {
        "naive": "naive (full logits)",
        "chunked": f"chunked log-probs ({args.chunk_size} tokens, recompute)",
        "fused": f"fused log-probs + loss ({args.chunk_size} tokens, training path)",
        **({LIGER: "Liger-Kernel fused linear GRPO (clip)"} if args.liger else {}),
    }
    for key, label in labels.items():
        ax_mem.plot(batches, [r[f"{key}_peak_mb"] for r in rows], marker="o", label=label)
        ax_time.plot(batches, [r[f"{key}_seconds"] for r in rows], marker="o", label=label)
    ax_mem.set(xlabel=f"batch (sequences of {args.seq} tokens)", ylabel="extra peak memory (MB)", title="Peak memory")
    ax_time.set(xlabel="batch", ylabel="seconds (forward + backward)", title="Time")
    for ax in (ax_mem, ax_time):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"log-probs + R2VPO loss, vocab {args.vocab}, hidden {args.hidden}, {args.device} {args.dtype}")
    payload = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": rows,
        "versions": versions(),
    }
    name = f"{args.device.replace(':', '')}_{args.dtype}"
    save_figure_and_json(fig, args.out_dir, f"{name}.png", f"{name}.json", payload)
    return payload


if __name__ == "__main__":
    main()

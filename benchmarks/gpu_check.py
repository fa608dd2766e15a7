"""
The GPU check of the LLM side: one script, a few minutes on one CUDA GPU, nothing downloaded.

1. Training: bf16 iterations of a tiny Qwen2 built locally (``llm_adapter.toy``, saved and loaded with
   ``from_pretrained``) with the transformers engine on the GPU and ``behavior_log_probs="recompute"``: the mean
   absolute difference between the engine's behavior log-probs and the trainer's recomputation, the reward, and
   the peak GPU memory.
2. Memory and time of the log-probs + loss, forward and backward, at Qwen's vocabulary (151,936), 1,024 tokens,
   batches 1, 2 and 4, bf16: naive ``log_softmax``, the chunked log-probs, the fused training path, and Liger-Kernel's
   ``LigerFusedLinearGRPOLoss`` where ``liger_kernel`` is installed (``benchmarks/llm_logprob_memory.py``). Goals:
   the fused path at most 1/4 of naive's memory, and within 1.1x of Liger's time.

It prints every figure and writes them, with the GPU's name, to ``results/gpu_check/<gpu>.json``. On a machine
without network, bring ``liger-kernel`` (pure Python, over Triton) as a wheel.

    python -m benchmarks.gpu_check                                  # on the GPU machine
    python -m benchmarks.gpu_check --device cpu --small            # the smoke run of the test suite
"""

import argparse
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import torch as th

from benchmarks import llm_logprob_memory
from benchmarks.common import RESULTS_DIR, versions, write_json

OUT_DIR = RESULTS_DIR / "gpu_check"


def training_check(device: str, iterations: int, bf16: bool) -> dict[str, Any]:
    """A few training iterations of the toy task on ``device``; what the engine and the trainer agree on."""
    from llm_adapter.config import TrainConfig
    from llm_adapter.toy import write_toy_setup
    from llm_adapter.trainer import R2VPOLLMTrainer

    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig.from_yaml(
            write_toy_setup(Path(folder) / "toy"),
            num_iterations=iterations,
            device=device,
            bf16=bf16,
            behavior_log_probs="recompute",
            progress_bar=False,
            report_to_tensorboard=False,
        )
        if device.startswith("cuda"):
            th.cuda.reset_peak_memory_stats()
        history = R2VPOLLMTrainer(config).train()
    differences = [m["sampler_log_prob_abs_diff"] for m in history]
    result = {
        "iterations": iterations,
        "bf16": bf16,
        "behavior_vs_recomputed_abs_diff_mean": sum(differences) / len(differences),
        "behavior_vs_recomputed_abs_diff_max_iteration": max(differences),
        "reward_first": history[0]["reward_mean"],
        "reward_last": history[-1]["reward_mean"],
        "seconds_per_iteration": sum(m["iteration_seconds"] for m in history) / len(history),
    }
    if device.startswith("cuda"):
        result["peak_memory_mb"] = th.cuda.max_memory_allocated() / 2**20
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny sizes (a smoke run, not a measurement)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not th.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device is visible (use --device cpu --small for a smoke run)")
    gpu = th.cuda.get_device_name(th.device(args.device)) if cuda else "cpu"
    print(f"gpu_check on {gpu}", flush=True)

    training = training_check(args.device, iterations=2 if args.small else 8, bf16=cuda)
    print("training:", json.dumps(training), flush=True)

    memory_args = ["--device", args.device, "--dtype", "bfloat16" if cuda else "float32", "--out-dir", str(args.out_dir)]
    if args.small:
        memory_args += ["--batch-sizes", "1", "--seq", "64", "--vocab", "512", "--hidden", "32", "--repeats", "2"]
    try:
        import liger_kernel  # noqa: F401

        liger_available = cuda
    except ImportError:
        liger_available = False
    if liger_available:
        memory_args.append("--liger")
    memory = llm_logprob_memory.main(memory_args)
    goals = {
        "fused_memory_at_most_quarter_of_naive": all(row["fused_memory_ratio"] <= 0.25 for row in memory["rows"]),
        "fused_time_within_1.1x_of_liger": (
            all(row["fused_time_vs_liger"] <= 1.1 for row in memory["rows"]) if liger_available else "liger not installed"
        ),
    }
    payload = {"gpu": gpu, "training": training, "log_probs_and_loss": memory["rows"], "goals": goals, "versions": versions()}
    print("goals:", json.dumps(goals), flush=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", gpu) + ("_small" if args.small else "")
    write_json(args.out_dir / f"{name}.json", payload)
    return payload


if __name__ == "__main__":
    main()

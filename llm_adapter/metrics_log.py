"""Per-iteration metrics to JSON lines, tensorboard and the progress bar."""

import json
from pathlib import Path
from types import TracebackType
from typing import Any

# Shown in the progress bar; everything goes to the JSON lines and tensorboard.
CONSOLE_KEYS = (
    "reward_mean",
    "completion_length_mean",
    "ratio_var",
    "var_coef",
    "zero_advantage_fraction",
    "tokens_per_second",
)


class MetricsLogger:
    """
    Appends one JSON object per logged iteration to ``metrics.jsonl`` and writes tensorboard scalars.

    On resume, entries after the checkpoint's iteration (from a run that went on past its last checkpoint) are
    dropped from ``metrics.jsonl`` first, so each iteration appears once.

    :param output_dir: the run directory
    :param tensorboard: write ``output_dir/tensorboard`` event files
    :param resume_iteration: the iteration training resumes from (0 for a fresh run, which truncates the file)
    """

    def __init__(self, output_dir: str | Path, *, tensorboard: bool, resume_iteration: int) -> None:
        self.path = Path(output_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_iteration > 0 and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["iteration"] < resume_iteration]
        self.path.write_text("".join(f"{line}\n" for line in kept))
        self.writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"), purge_step=resume_iteration or None)

    def log(self, metrics: dict[str, float], iteration: int) -> None:
        """
        Record one iteration's metrics.

        :param metrics: scalar metrics
        :param iteration: the iteration index (also the tensorboard step)
        """
        with self.path.open("a") as file:
            file.write(json.dumps({"iteration": iteration, **metrics}) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                tag = f"eval/{key.removeprefix('eval_')}" if key.startswith("eval_") else f"train/{key}"
                self.writer.add_scalar(tag, value, iteration)

    @staticmethod
    def console_summary(metrics: dict[str, float]) -> dict[str, str]:
        """The few metrics shown in the progress bar, formatted."""
        return {key: f"{metrics[key]:.4g}" for key in CONSOLE_KEYS if key in metrics}  # the metrics file's names

    def close(self) -> None:
        """Flush and close tensorboard."""
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

"""``r2vpo-zoo``: rl_zoo3's command line with ``r2vpo``, ``r2vpo_off`` and ``spo`` registered."""

import runpy
import sys

from sb3_r2vpo.zoo.registration import ALGORITHMS, hyperparams_path, register

SCRIPTS = ("train", "enjoy", "record_video", "plot_train", "plot_from_file", "all_plots")
USAGE = f"usage: r2vpo-zoo {{{','.join(SCRIPTS)}}} [rl_zoo3 arguments...]"


def _algo(argv: list[str]) -> str | None:
    for index, arg in enumerate(argv):
        if arg == "--algo" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--algo="):
            return arg.split("=", 1)[1]
    return None


def with_default_conf_file(argv: list[str]) -> list[str]:
    """
    Add ``--conf-file <packaged hyperparams>`` for ``train`` with ``--algo r2vpo`` / ``r2vpo_off`` / ``spo`` when none
    is given.

    :param argv: the arguments after the script name
    :return: the arguments rl_zoo3 will see
    """
    algo = _algo(argv)
    given = any(arg in ("-conf", "--conf-file") or arg.startswith("--conf-file=") for arg in argv)
    if algo in ALGORITHMS and not given:
        return [*argv, "--conf-file", str(hyperparams_path(algo))]
    return argv


def main(argv: list[str] | None = None) -> None:
    """Run an rl_zoo3 script (``r2vpo-zoo train --algo r2vpo --env CartPole-v1 ...``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        print("Every rl_zoo3 flag works; --algo also accepts r2vpo, r2vpo_off and spo, whose --conf-file defaults to")
        print("the hyperparameters shipped with sb3-r2vpo.")
        return
    script, rest = args[0], args[1:]
    if script not in SCRIPTS:
        raise SystemExit(f"r2vpo-zoo: unknown script {script!r}\n{USAGE}")
    register()
    if script == "train":
        rest = with_default_conf_file(rest)
    sys.argv = [f"r2vpo-zoo {script}", *rest]
    if script == "train":
        from rl_zoo3.train import train

        train()
    elif script == "enjoy":
        from rl_zoo3.enjoy import enjoy

        enjoy()
    elif script == "record_video":
        # rl_zoo3 keeps record_video's code under `if __name__ == "__main__"`.
        runpy.run_module("rl_zoo3.record_video", run_name="__main__")
    else:
        from rl_zoo3 import plots

        getattr(plots, script)()

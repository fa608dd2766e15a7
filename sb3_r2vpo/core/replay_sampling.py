"""
The order in which R2VPO-OFF draws from its replay of past rollouts, shared by the SB3 buffer and the LLM replay.
"""

from collections.abc import Iterator

#: How R2VPO-OFF draws its samples from the replay: ``"uniform"`` over everything stored (the paper's
#: Algorithm 2), or ``"newest_first"``: one full pass over the newest rollout, then uniform draws over all.
REPLAY_SAMPLINGS = ("uniform", "newest_first")


def check_replay_sampling(sampling: str) -> str:
    """
    :param sampling: the ``replay_sampling`` setting
    :return: ``sampling``, if it is one of :data:`REPLAY_SAMPLINGS`
    """
    if sampling not in REPLAY_SAMPLINGS:
        raise ValueError(f"replay_sampling={sampling!r} must be one of {list(REPLAY_SAMPLINGS)}")
    return sampling


def permutation_passes(
    n_samples: int, n_stored: int, *, sampling: str = "uniform", n_newest: int = 0
) -> Iterator[tuple[bool, int]]:
    """
    The permutation passes that draw ``n_samples`` samples: ``(newest_only, length)`` for each. ``"uniform"``: whole
    passes over the ``n_stored`` samples, the last one cut short. ``"newest_first"``: first a pass over the
    ``n_newest`` samples of the newest rollout, then uniform passes over all for the rest.

    :param n_samples: total number of samples drawn
    :param n_stored: number of samples stored, the newest rollout's included
    :param sampling: one of :data:`REPLAY_SAMPLINGS`
    :param n_newest: samples of the newest rollout (``"newest_first"``)
    """
    drawn = 0
    if check_replay_sampling(sampling) == "newest_first":
        take = min(n_newest, n_samples)
        yield True, take
        drawn += take
    while drawn < n_samples:
        take = min(n_stored, n_samples - drawn)
        yield False, take
        drawn += take

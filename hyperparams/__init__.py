"""RL Zoo hyperparameters for ``r2vpo`` shipped with the package (see :func:`sb3_r2vpo.hyperparams_path`)."""

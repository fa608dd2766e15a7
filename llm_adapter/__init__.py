"""
GRPO-style LLM training with R2VPO (rollouts from vLLM or transformers mapped into :mod:`sb3_r2vpo.core`).

The adapter itself is delivered by its own issue; this package exists so the distribution's layout is final.
"""

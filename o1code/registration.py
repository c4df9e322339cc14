"""Registration of the O1Code-* Gymnasium ids; imports nothing of o1code, so it is cheap."""

import gymnasium as gym

#: The registered ids and the reasoning mode each one runs.
ENV_IDS = {
    "O1Code-MBPP-v0": "pseudocode",
    "O1Code-MBPP-Vanilla-v0": "vanilla",
    "O1Code-MBPP-Direct-v0": "direct",
    "O1Code-HumanEval-v0": "pseudocode",
    "O1Code-HumanEval-Vanilla-v0": "vanilla",
    "O1Code-HumanEval-Direct-v0": "direct",
}


def register_envs() -> None:
    """Register the ids with Gymnasium (idempotent); `import o1code` does it."""
    for env_id, mode in ENV_IDS.items():
        if env_id not in gym.registry:
            dataset = "humaneval" if "-HumanEval-" in env_id else "mbpp"
            gym.register(id=env_id, entry_point="o1code.envs.code_env:CodeEnv",
                         kwargs={"mode": mode, "dataset": dataset})

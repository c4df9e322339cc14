"""What learns from files: policy SFT on correct reasoning paths (`sft`), the PRM (`prm`, point-wise and
pair-wise) and the TCG's SFT and DPO (`tcg`). Each stage reads records, trains with TRL/peft
(`o1code.training.common`) and writes a model directory; ordering stages into a run is
`o1code.pipeline`'s job (on-line RL, PPO/GRPO, is `o1code.agents.ppo`).

Layering: training imports models, data and rewards, never pipeline or cli. Heavy libraries (torch,
transformers, TRL, peft, datasets) load when a stage runs.
"""

from o1code.training.errors import TrainingError
from o1code.training.sft import PolicySFTConfig, PolicySFTResult, train_sft
from o1code.training.tcg import TCGTrainConfig, TCGTrainResult, train_tcg
from o1code.training.tcg_data import build_tcg_examples

__all__ = ["PolicySFTConfig", "PolicySFTResult", "TCGTrainConfig", "TCGTrainResult", "TrainingError",
           "build_tcg_examples", "train_sft", "train_tcg"]

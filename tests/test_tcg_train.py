"""TCG training: SFT then DPO with TRL + peft on the tiny random model (CPU), resume included."""

from __future__ import annotations

import json
import shutil

import pytest

from o1code.data import load_mbpp
from o1code.models import SamplingParams, load_generator
from o1code.models.tiny import build_tiny_model
from o1code.training import TCGTrainConfig, TrainingError, train_tcg

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _state(ckpt):
    return json.loads((ckpt / "trainer_state.json").read_text())


def test_sft_dpo_pipeline_on_tiny_model(tiny, tmp_path):
    # A small fixed set seen whole every step (batch = all of it), so the loss must fall.
    problems = [p for p in load_mbpp("train") if len(p.reference or "") < 250][:4]
    out = tmp_path / "run"
    cfg = TCGTrainConfig(model=str(tiny), out_dir=str(out), sft_max_steps=6, dpo_max_steps=4, batch_size=4,
                         learning_rate=1e-2, max_length=1024, save_steps=3, lora_r=8, lora_dropout=0.0, warmup_ratio=0.0,
                         lr_scheduler="constant")
    res = train_tcg(cfg, problems=problems)
    assert res.n_sft == 4 and res.n_dpo >= 1
    first, last = res.sft_losses
    assert last < first
    d_first, d_last = res.dpo_losses
    assert d_first == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1: loss is log 2
    assert d_last < d_first
    assert any((out / "sft" / "runs").iterdir()) and any((out / "dpo" / "runs").iterdir())  # TensorBoard
    gen = load_generator(f"hf:{res.final_dir}")
    assert len(gen.generate(["### Problem"], SamplingParams(max_tokens=4, seed=0))[0]) == 1

    # Finished stages are skipped on a re-run.
    again = train_tcg(cfg, problems=problems)
    assert again.sft_losses is None and again.dpo_losses is None

    # An interrupted SFT stage resumes from its last checkpoint instead of starting over.
    shutil.rmtree(out / "sft" / "merged")
    shutil.rmtree(out / "final")
    before = _state(out / "sft" / "checkpoint-6")["log_history"]
    resumed = train_tcg(TCGTrainConfig(**{**cfg.__dict__, "sft_max_steps": 8, "dpo_max_steps": -1}), problems=problems)
    after = _state(out / "sft" / "checkpoint-8")["log_history"]
    assert [h["loss"] for h in after[:6]] == [h["loss"] for h in before[:6]]  # steps 1-6 were not redone
    assert (resumed.final_dir / "config.json").is_file()


def test_training_needs_usable_records(tiny, tmp_path):
    bad = [p for p in load_mbpp("train") if p.task_id == "mbpp/601"]
    with pytest.raises(TrainingError):
        train_tcg(TCGTrainConfig(model=str(tiny), out_dir=str(tmp_path)), problems=bad)
    with pytest.raises(TrainingError):
        TCGTrainConfig(learning_rate=0).validate()
    with pytest.raises(TrainingError, match="cannot load model"):
        train_tcg(TCGTrainConfig(model=str(tmp_path / "no-such-model"), out_dir=str(tmp_path / "o")),
                  problems=[p for p in load_mbpp("train") if p.task_id == "mbpp/602"])


def test_pipeline_still_exports_the_training_stage():
    import o1code.pipeline.tcg as pt
    from o1code import training

    assert pt.train_tcg is training.train_tcg and pt.TCGTrainConfig is training.TCGTrainConfig
    assert pt.build_tcg_examples is training.build_tcg_examples

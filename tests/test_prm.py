"""Process reward model: encoding, scoring, persistence, and learning a planted step label (tiny model)."""

import json
import random

import pytest

pytest.importorskip("peft")

from o1code.models.prm import PRMConfig, ProcessRewardModel  # noqa: E402
from o1code.models.tiny import build_tiny_model  # noqa: E402
from o1code.training.errors import TrainingError  # noqa: E402
from o1code.training.prm import (PRMTrainConfig, auc, evaluate_rows, split_heldout, subsample_problems,  # noqa: E402
                                 train_prm)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny")))


def _prm(tiny, **kw):
    return ProcessRewardModel(PRMConfig(model=tiny, device="cpu", **kw))


def test_encode_marks_every_step_and_cuts_from_the_left(tiny):
    prm = _prm(tiny)
    ids, pos = prm.encode("Write add.", ["plan it", "code it"])
    assert len(pos) == 2 and pos[0] < pos[1] == len(ids) - 1
    m = len(prm.marker_ids)
    assert [ids[p - m + 1:p + 1] for p in pos] == [prm.marker_ids, prm.marker_ids]
    short = _prm(tiny, max_length=pos[1] - pos[0] + 1)
    ids2, pos2 = short.encode("Write add.", ["plan it", "code it"])
    assert len(ids2) == pos[1] - pos[0] + 1 and pos2 == [0, len(ids2) - 1]  # step 1's marker: the first token
    tiny_cut = _prm(tiny, max_length=3)
    assert tiny_cut.encode("Write add.", ["plan it", "code it"])[1][0] == -1


def test_score_is_a_probability_per_step_and_batch_independent(tiny):
    prm = _prm(tiny)
    one = prm.score("Write add.", ["plan it", "code it", "test it"])
    assert len(one) == 3 and all(0 < s < 1 for s in one)
    batch = prm.score_batch([("Other question, longer than the first one.", ["x"]),
                             ("Write add.", ["plan it", "code it", "test it"])])
    assert batch[1] == pytest.approx(one, abs=1e-5)  # right padding does not move the scores
    assert prm.score("Write add.", []) == []
    # a step's score depends on its prefix only, not on later steps
    assert prm.score("Write add.", ["plan it"])[0] == pytest.approx(one[0], abs=1e-5)


def test_scores_read_the_lm_head_at_the_markers_only(tiny):
    import torch

    prm = _prm(tiny)
    batch = [("Write add.", ["plan it", "code it"]), ("Other question, longer than the first one.", ["x"])]
    ids, pos = prm.encode(*batch[0])
    with torch.no_grad():
        full = prm.model(input_ids=torch.tensor([ids])).logits[0]
        z = prm.step_logodds(batch)[0]
    pos_id, neg_id = prm.label_ids
    assert z.tolist() == pytest.approx([float(full[p, pos_id] - full[p, neg_id]) for p in pos], abs=1e-4)


def test_bfloat16_backbone_keeps_float32_adapters(tiny):
    import torch

    prm = _prm(tiny, dtype="bfloat16")
    trainable = [p for p in prm.model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert any(p.dtype == torch.bfloat16 for p in prm.model.parameters())
    scores = prm.score("Write add.", ["plan it", "code it"])
    assert scores == pytest.approx(_prm(tiny).score("Write add.", ["plan it", "code it"]), abs=0.05)


def test_bad_labels_are_refused(tiny):
    from o1code.models.errors import InvalidParamsError

    with pytest.raises(InvalidParamsError):
        _prm(tiny, positive=" +x", negative=" +y")


def test_auc():
    assert auc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert auc([0.1, 0.2, 0.9], [1, 1, 0]) == 0.0
    assert auc([0.5, 0.5], [1, 0]) == 0.5
    assert auc([0.3], [1]) is None


def _planted_rows(problems=24, seed=0):
    """Steps saying "good" are labelled 1, "bad" 0, whatever else they say: learnable from the text."""
    rng = random.Random(seed)
    words = ["add", "sum", "loop", "list", "return", "check", "sort", "count"]
    rows = []
    for t in range(problems):
        for _ in range(2):
            goods = [rng.random() < 0.5 for _ in range(3)]
            rows.append({"kind": "point", "task_id": f"t{t}", "question": f"Problem {t}: {rng.choice(words)}",
                         "steps": [f"{rng.choice(words)} {'good' if g else 'bad'} {rng.choice(words)}"
                                   for g in goods], "labels": [float(g) for g in goods]})
        w = rng.choice(words)
        rows.append({"kind": "pair", "task_id": f"t{t}", "question": f"Problem {t}: {w}", "prefix": [f"{w} plan"],
                     "win": f"{rng.choice(words)} good", "lose": f"{rng.choice(words)} bad"})
    return rows


def test_heldout_split_is_by_problem_and_seeded():
    rows = _planted_rows(10)
    train, held = split_heldout(rows, 0.3, seed=1)
    assert {r["task_id"] for r in train}.isdisjoint({r["task_id"] for r in held})
    assert len({r["task_id"] for r in held}) == 3 and split_heldout(rows, 0.3, seed=1) == (train, held)


def test_prm_learns_a_planted_label_point_and_pair(tiny, tmp_path):
    """Point-wise BCE and pair-wise Bradley-Terry together: on held-out problems the step AUC and the
    pair accuracy go from chance to near perfect (a flipped sign would drive both to 0)."""
    cfg = PRMTrainConfig(model=tiny, run_dir=str(tmp_path / "prm"), objective="both", epochs=3, learning_rate=3e-3,
                         batch_size=4, grad_accum=1, lr_scheduler="constant", save_steps=1000, device="cpu",
                         heldout_fraction=0.25)
    res = train_prm(cfg, _planted_rows())
    before, after = res.metrics["before"], res.metrics["after"]
    assert after["auc"] >= 0.95 and after["auc"] > before["auc"] + 0.2
    assert after["pair_accuracy"] >= 0.9 and after["accuracy"] >= 0.9
    assert res.loss[1] < 0.5 * res.loss[0]
    # the saved PRM scores as the trained one
    loaded = ProcessRewardModel.load(res.final_dir, device="cpu")
    q, steps = "Problem 99: sum", ["sum good add", "loop bad list"]
    s = loaded.score(q, steps)
    assert s[0] > 0.8 and s[1] < 0.2
    metrics = json.loads((tmp_path / "prm" / "metrics.json").read_text())
    assert metrics["metrics"]["after"]["auc"] == after["auc"]
    # resuming with a different setting is refused, naming it
    with pytest.raises(Exception, match="learning_rate"):
        train_prm(PRMTrainConfig(**{**cfg.__dict__, "learning_rate": 1e-4}), _planted_rows())


def _flipped(rows, tasks):
    """`rows` with the labels of the problems `tasks` reversed ("bad" steps good)."""
    out = []
    for r in rows:
        if r["task_id"] in tasks:
            r = ({**r, "labels": [1 - v for v in r["labels"]]} if r["kind"] == "point"
                 else {**r, "win": r["lose"], "lose": r["win"]})
        out.append(r)
    return out


def test_the_checkpoint_is_chosen_on_the_heldout_problems(tiny, tmp_path):
    """The held-out problems reward the opposite of what training teaches, so every epoch is worse on
    them than the one before: the epoch kept is the first, RUN/final scores as it did then, and
    select="last" keeps the last. A run that always kept the last epoch would fail."""
    rows = _planted_rows()
    held = {r["task_id"] for r in split_heldout(rows, 0.25, seed=0)[1]}
    rows = _flipped(rows, held)
    kw = dict(model=tiny, objective="both", epochs=2, learning_rate=3e-3, batch_size=4, grad_accum=1,
              lr_scheduler="constant", save_steps=1000, device="cpu", heldout_fraction=0.25)
    res = train_prm(PRMTrainConfig(run_dir=str(tmp_path / "best"), **kw), rows)
    assert [round(e["epoch"]) for e in res.epochs] == [1, 2]
    assert res.epochs[0]["logloss"] < res.epochs[-1]["logloss"]  # training moves away from the held-out labels
    assert res.chosen == res.epochs[0]
    heldout = [r for r in rows if r["task_id"] in held]
    kept = evaluate_rows(ProcessRewardModel.load(res.final_dir, device="cpu"), heldout)
    assert kept["logloss"] == pytest.approx(res.epochs[0]["logloss"], abs=1e-4)
    assert res.metrics["after"]["logloss"] == res.epochs[0]["logloss"]
    last = train_prm(PRMTrainConfig(run_dir=str(tmp_path / "last"), select="last", **kw), rows)
    assert last.chosen == last.epochs[-1] and last.chosen["step"] > res.chosen["step"]
    assert evaluate_rows(ProcessRewardModel.load(last.final_dir, device="cpu"), heldout)["logloss"] == \
        pytest.approx(last.epochs[-1]["logloss"], abs=1e-4)


def test_problem_share_is_seeded_nested_and_keeps_the_heldout_problems(tiny, tmp_path):
    rows = _planted_rows(20)
    quarter, half = subsample_problems(rows, 0.25, seed=3), subsample_problems(rows, 0.5, seed=3)
    tasks = lambda rs: {r["task_id"] for r in rs}  # noqa: E731
    assert len(tasks(quarter)) == 5 and len(tasks(half)) == 10 and tasks(quarter) < tasks(half)
    assert subsample_problems(rows, 0.25, seed=3) == quarter and subsample_problems(rows, 1.0, seed=3) == rows
    kw = dict(model=tiny, max_steps=1, batch_size=4, grad_accum=1, save_steps=1000, device="cpu", heldout_fraction=0.2)
    small = train_prm(PRMTrainConfig(run_dir=str(tmp_path / "q"), problems_fraction=0.25, **kw), rows)
    full = train_prm(PRMTrainConfig(run_dir=str(tmp_path / "f"), **kw), rows)
    assert small.heldout_rows == full.heldout_rows and small.train_rows < full.train_rows


def test_train_refuses_empty_or_unknown(tiny, tmp_path):
    with pytest.raises(TrainingError, match="objective"):
        PRMTrainConfig(objective="listwise")
    with pytest.raises(TrainingError, match="select"):
        PRMTrainConfig(select="newest")
    with pytest.raises(TrainingError, match="problems_fraction"):
        PRMTrainConfig(problems_fraction=0)
    with pytest.raises(TrainingError, match="validation split"):
        train_prm(PRMTrainConfig(model=tiny, run_dir=str(tmp_path / "v")),
                  [{**r, "split": "validation"} for r in _planted_rows(2)])
    with pytest.raises(TrainingError, match="no pair rows"):
        train_prm(PRMTrainConfig(model=tiny, run_dir=str(tmp_path / "r"), objective="pair"),
                  [r for r in _planted_rows(2) if r["kind"] == "point"])

"""Synthetic arithmetic: records, disjoint deterministic split, scored by the reward."""
from areal_mega.data import DataConfig, MathRecord, load_records, synthetic_split
from areal_mega.reward import extract_answer
from areal_mega.reward.equal import equal_unguarded


def test_split_is_disjoint_complete_and_deterministic():
    train, held = synthetic_split(seed=1)
    assert len(held) == 200 and len(train) == 90 * 90 - 200
    assert not {r.problem for r in train} & {r.problem for r in held}
    assert synthetic_split(seed=1) == (train, held)
    assert synthetic_split(seed=2)[1] != held


def test_records_are_correct_arithmetic():
    train, held = synthetic_split(seed=0, low=10, high=12, heldout=2)
    for rec in train + held:
        assert isinstance(rec, MathRecord)
        a, b = rec.id.split("+")
        assert rec.problem == f"Compute {a}+{b}." and rec.answer == str(int(a) + int(b))
        assert 10 <= int(a) <= 12 and 10 <= int(b) <= 12


def test_expected_response_scores_correct():
    _, held = synthetic_split(seed=1)
    for rec in held[:20]:
        assert equal_unguarded(extract_answer(f" \\boxed{{{rec.answer}}}"), rec.answer)
        assert not equal_unguarded(extract_answer(f" \\boxed{{{int(rec.answer) + 1}}}"), rec.answer)


def test_load_records_synthetic():
    cfg = DataConfig(path="synthetic", seed=3, synthetic_heldout=100)
    assert load_records(cfg) == synthetic_split(3, 10, 99, 100)[0]

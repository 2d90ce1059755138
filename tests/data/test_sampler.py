"""Resumable sampler: permutations, epochs, exact resume."""
import pytest

from areal_mega.data import ResumableSampler


def test_each_epoch_is_a_permutation():
    s = ResumableSampler(10, batch_size=5, seed=3)
    first = s.next_batch() + s.next_batch()
    second = s.next_batch() + s.next_batch()
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second and first != list(range(10))
    assert s.epoch == 1


def test_drop_last_and_partial_tail():
    s = ResumableSampler(7, batch_size=3, seed=0)
    sizes = [len(s.next_batch()) for _ in range(3)]
    assert sizes == [3, 3, 3] and s.epoch == 1
    t = ResumableSampler(7, batch_size=3, seed=0, drop_last=False)
    assert [len(t.next_batch()) for _ in range(4)] == [3, 3, 1, 3]


def test_resume_gives_the_same_batches():
    a = ResumableSampler(23, batch_size=4, seed=7)
    for _ in range(9):  # into the second epoch
        a.next_batch()
    state = a.state_dict()
    assert state == {"epoch": 1, "position": 16, "seed": 7, "num_items": 23, "batch_size": 4}
    expected = [a.next_batch() for _ in range(10)]
    b = ResumableSampler(23, batch_size=4, seed=999)
    b.load_state_dict(state)
    assert [b.next_batch() for _ in range(10)] == expected


def test_seed_changes_order_and_bad_state_is_refused():
    assert ResumableSampler(50, 50, seed=1).next_batch() != ResumableSampler(50, 50, seed=2).next_batch()
    s = ResumableSampler(10, 2)
    with pytest.raises(ValueError, match="num_items 11 does not match"):
        s.load_state_dict({"epoch": 0, "position": 0, "seed": 1, "num_items": 11})
    with pytest.raises(ValueError, match="missing 'position'"):
        s.load_state_dict({"epoch": 0, "seed": 1, "num_items": 10})
    with pytest.raises(ValueError, match="batch_size"):
        ResumableSampler(3, 4)

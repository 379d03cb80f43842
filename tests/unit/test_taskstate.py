import pytest

from swarm.api.spec import STATE_ORDER, TASK_STATES, TERMINAL_STATES
from swarm.api.taskstate import TRANSITIONS, IllegalTransition, advance, can_advance, is_running_like

LIVE = [s for s in TASK_STATES if s not in TERMINAL_STATES]


def test_table_covers_every_state():
    assert set(TRANSITIONS) == set(TASK_STATES)


def test_live_states_move_forward_and_may_skip_ahead():
    for i, a in enumerate(LIVE):
        for b in LIVE[i + 1:]:
            assert advance(a, b) == b


def test_live_states_never_move_backward():
    for i, a in enumerate(LIVE):
        for b in LIVE[:i]:
            with pytest.raises(IllegalTransition):
                advance(a, b)


def test_same_state_is_not_a_transition():
    for s in TASK_STATES:
        with pytest.raises(IllegalTransition):
            advance(s, s)


def test_every_live_state_may_fail_shut_down_be_orphaned_or_removed():
    for s in LIVE:
        for end in ("failed", "shutdown", "orphaned", "remove"):
            assert advance(s, end) == end


def test_rejected_only_from_assigned_accepted_preparing():
    allowed = {s for s in LIVE if can_advance(s, "rejected")}
    assert allowed == {"assigned", "accepted", "preparing"}


def test_complete_only_once_a_container_can_have_run():
    allowed = {s for s in LIVE if can_advance(s, "complete")}
    assert allowed == {"ready", "starting", "running"}


def test_terminal_states_are_final():
    for t in TERMINAL_STATES:
        for s in TASK_STATES:
            with pytest.raises(IllegalTransition) as exc:
                advance(t, s)
            assert "final" in str(exc.value)


def test_unknown_states_raise():
    with pytest.raises(IllegalTransition, match="unknown task state 'bogus'"):
        advance("running", "bogus")
    with pytest.raises(IllegalTransition):
        advance("bogus", "running")


def test_illegal_transition_names_both_states():
    with pytest.raises(IllegalTransition, match="from running to pending"):
        advance("running", "pending")


def test_live_moves_in_table_respect_state_order():
    for s, nexts in TRANSITIONS.items():
        for n in nexts:
            assert n in TERMINAL_STATES or STATE_ORDER[n] > STATE_ORDER[s]


def test_running_like_is_assigned_through_running():
    assert [s for s in TASK_STATES if is_running_like(s)] == [
        "assigned", "accepted", "preparing", "ready", "starting", "running"]
    assert not is_running_like("new") and not is_running_like("pending") and not is_running_like("failed")

"""The chaos checker's pause and fair-shares properties, on hand-built histories (no server):
``paused`` (no grant while the scope was certainly paused), ``fair`` (two backlogged keys
weighted 3:1 get 0.75 +- 0.075 of every 100 grants to them) and ``order`` while fair shares
could have been on (in order within a fairness key only)."""

from __future__ import annotations

import math
from dataclasses import replace

from chaos.check_fair import Unnamed, check_fair
from chaos.check_paused import certainly_paused
from chaos.checker import CheckerOptions, check
from chaos.facts import Accepted
from chaos.fair import HEAVY, LIGHT, WEIGHTS
from chaos.grants import EXACT, Grant
from chaos.limits import Change, FairOrder
from chaos.verdicts import PropertyResult, Verdict
from tests.chaos_histories import T0, Story, clean

ON = FairOrder(True, tuple(sorted(WEIGHTS.items())))
OFF = FairOrder(False, tuple(sorted(WEIGHTS.items())))


def verdict_of(story: Story) -> Verdict:
    return check(story.history(), story.lines, CheckerOptions())


def assert_only_fails(verdict: Verdict, name: str) -> None:
    assert verdict.failed() == [name], [(r.name, r.violations) for r in verdict.properties]


# --- paused ---------------------------------------------------------------------------------


def pause(story: Story, sent: float, answered: float, *, resume: bool = False, status: int | None
          = 200) -> None:  # fmt: skip
    request = {"scope": "global", "label": "global"}
    error = "timeout" if status is None else None
    answer = {"scope": "global", "paused": not resume} if status == 200 else None
    story.op("resume" if resume else "pause", sent, answered, request, status, answer, error=error)


def test_a_run_granted_between_a_pause_s_answer_and_the_resume_fails_paused() -> None:
    story = clean()  # C is granted at 3.05
    pause(story, 2.0, 2.5)
    pause(story, 3.5, 3.6, resume=True)

    verdict = verdict_of(story)

    assert_only_fails(verdict, "paused")
    assert verdict["paused"].violations == [
        "C granted 08:00:03.050 (the coordinator's record) in global: paused (answered) "
        "08:00:02.500, resume sent 08:00:03.500"
    ]
    assert verdict["paused"].checked == 4  # A, B, C and the probe


def test_a_grant_the_pause_or_resume_may_not_have_covered_is_no_violation() -> None:
    resumed_before = clean()
    pause(resumed_before, 2.0, 2.5)
    pause(resumed_before, 3.0, 3.6, resume=True)  # sent before C's grant: it may have resumed
    assert verdict_of(resumed_before).passed

    answered_late = clean()
    pause(answered_late, 2.0, 3.1)  # answered after C's grant: it may not have paused yet
    pause(answered_late, 3.5, 3.6, resume=True)
    assert verdict_of(answered_late).passed

    unanswered = clean()
    pause(unanswered, 2.0, 12.0, status=None)  # may never have taken effect
    pause(unanswered, 3.5, 3.6, resume=True)
    assert verdict_of(unanswered).passed
    # C and P: the pause may have taken effect after the resume, and never been undone.
    assert "grants while a pause may have been in effect (no claim): 2" in str(
        verdict_of(unanswered)["paused"].notes
    )


def test_a_resume_that_could_not_connect_changed_nothing() -> None:
    story = clean()
    pause(story, 2.0, 2.5)
    story.op("resume", 2.6, 2.6, {"scope": "global", "label": "global"}, None,
             error="connection (ConnectError)")  # fmt: skip
    pause(story, 3.5, 3.6, resume=True)

    assert verdict_of(story).failed() == ["paused"]


def test_an_earlier_resume_that_got_no_answer_leaves_no_pause_certain() -> None:
    changes = [
        Change(False, 1.0, math.inf),  # a resume with no answer: it may land at any time
        Change(True, 2.0, 2.5),
        Change(False, 5.0, 5.5),
        Change(True, 6.0, 6.5),
        Change(False, 9.0, 9.5),
    ]

    assert certainly_paused(changes) == []
    assert certainly_paused(changes[1:]) == [(2.5, 5.0), (6.5, 9.0)]


# --- fair -----------------------------------------------------------------------------------


def backlogged(
    pattern: str, *, count: int = 100, tails: str = "AB"
) -> tuple[dict[str, Accepted], list[Grant], dict[str, tuple[float, str]]]:
    """Grants 1 s apart from T0 + 1 to the keys as ``pattern`` repeats ("A": the heavy key,
    "B": the light one), of runs each accepted 20 s before its grant; and for each key in
    ``tails`` a run accepted before them all that still waited after the last: both keys always
    have runs waiting."""
    accepted: dict[str, Accepted] = {}
    grants: list[Grant] = []
    waited: dict[str, tuple[float, str]] = {}

    def accept(run_id: str, key: str, answered: float) -> None:
        accepted[run_id] = Accepted(
            run_id=run_id,
            scope="global",
            on_busy="enqueue",
            queue_position=5,
            sent=answered - 0.1,
            answered=answered,
            key=None,
            phase="chaos",
            priority=1,
            fair_key=key,
        )

    for number in range(count):
        key = HEAVY if pattern[number % len(pattern)] == "A" else LIGHT
        run_id = f"{key}-{number}"
        granted = T0 + number + 1.0
        accept(run_id, key, granted - 20.0)
        grants.append(Grant(run_id, granted, granted, EXACT))
        waited[run_id] = (granted, "its grant")
    for tail in tails:
        key = HEAVY if tail == "A" else LIGHT
        accept(f"{key}-tail", key, T0 - 25.0)
        waited[f"{key}-tail"] = (T0 + count + 5.0, "read at position 1")
    return accepted, grants, waited


def fair_on(sent: float = -30.0, answered: float = -29.0) -> list[Change[FairOrder | None]]:
    return [Change(ON, T0 + sent, T0 + answered)]


def judge(
    pattern: str,
    changes: list[Change[FairOrder | None]] | None = None,
    unnamed: list[Unnamed] | None = None,
    count: int = 100,
) -> PropertyResult:
    accepted, grants, waited = backlogged(pattern, count=count)
    return check_fair(
        accepted,
        {"global": grants},
        waited,
        fair_on() if changes is None else changes,
        600.0,
        unnamed or [],
    )


def test_two_backlogged_keys_served_3_to_1_pass_fair() -> None:
    result = judge("AABA", count=130)

    assert result.passed, result.violations
    assert result.checked == 130
    assert "grants judged: 130 in 31 windows of up to 100" in result.notes[1]


def test_two_backlogged_keys_served_1_to_1_fail_fair() -> None:
    result = judge("AB", count=130)

    assert result.violations == [
        "global: grants 08:00:01.000 to 08:01:40.000: fair-a got 0.50 of 100 grants (fair-a 50, "
        "fair-b 50), not 0.75 +- 0.075 (and 30 more windows)"
    ]
    assert result.checked == 130


def test_a_share_just_inside_the_tolerance_passes_and_just_outside_fails() -> None:
    inside = "A" * 68 + "B" * 32  # 0.68 >= 0.675
    outside = "A" * 67 + "B" * 33  # 0.67 < 0.675

    assert judge(inside).passed
    assert not judge(outside).passed


def test_a_stretch_shorter_than_40_grants_is_not_judged() -> None:
    result = judge("AB", count=39)

    assert result.passed
    assert result.checked == 0
    assert "nothing judged" in result.notes[-1]


def test_fair_shares_not_certainly_on_judge_nothing() -> None:
    # Turned on only while the grants went on (answered after the 60th): 40 grants certain.
    late = judge("AB", changes=fair_on(sent=-30.0, answered=60.5))
    assert not late.passed
    assert late.checked == 40

    # A change to off with no answer, sent before the 30th grant: no 40 certain in a row.
    off = [*fair_on(), Change(OFF, T0 + 29.5, math.inf)]
    assert judge("AB", changes=off).checked == 0

    # A change to other weights: not the 3:1 the grants are judged by.
    others = [*fair_on(), Change(FairOrder(True, (("fair-a", 1),)), T0 + 29.5, T0 + 29.6)]
    assert judge("AB", changes=others).checked == 0


def test_a_key_with_nothing_waiting_for_a_while_ends_the_stretch() -> None:
    accepted, grants, waited = backlogged("AB", tails="A")
    # The light key's runs granted after the 30th s were accepted only just before their
    # grants: it had nothing waiting between them.
    for run_id, run in list(accepted.items()):
        if run.fair_key == LIGHT and waited[run_id][0] > T0 + 30.0:
            granted = waited[run_id][0]
            accepted[run_id] = replace(run, answered=granted - 0.5, sent=granted - 0.6)

    result = check_fair(accepted, {"global": grants}, waited, fair_on(), 600.0)

    assert result.checked == 0, result.notes
    assert judge("AB").checked == 100, "with them waiting all along, 100 are judged"


def test_a_grant_of_the_keys_at_another_rank_or_aged_ends_the_stretch() -> None:
    accepted, grants, waited = backlogged("AB")
    # The 30th and 70th runs: a priority 3 run, and one that waited past aging_seconds.
    accepted["fair-a-30"] = replace(accepted["fair-a-30"], priority=3)
    accepted["fair-a-70"] = replace(accepted["fair-a-70"], sent=accepted["fair-a-70"].sent - 600)

    result = check_fair(accepted, {"global": grants}, waited, fair_on(), 600.0)

    assert result.checked == 0, result.notes  # stretches of 30, 39 and 29


def test_a_start_no_answer_named_may_add_a_grant_to_its_key() -> None:
    pattern = "A" * 67 + "B" * 33  # 0.67: just outside
    assert not judge(pattern).passed

    lost = [Unnamed(HEAVY, "global", 1, T0 + 5.0, T0 + 15.0) for _ in range(2)]
    assert judge(pattern, unnamed=lost).passed, "two more grants to fair-a: 69 of 102"
    elsewhere = [Unnamed(HEAVY, "user:x", 1, T0 + 5.0, T0 + 15.0) for _ in range(2)]
    assert not judge(pattern, unnamed=elsewhere).passed


# --- order while fair shares could have been on ---------------------------------------------


def fair_change(story: Story, sent: float, answered: float, *, on: bool = True) -> None:
    request = {"body": {"slots": 1, "fair_shares": on, "weights": dict(WEIGHTS)}}
    story.op("limits", sent, answered, request, 200, request["body"])


def with_d_first(story: Story, *, b_key: str | None = None, d_key: str = LIGHT) -> None:
    """D: enqueued after B's 202 with fairness key ``d_key``, granted at 1.0, before B."""
    story.start(0.7, 0.8, "enqueue", "D", position=2)
    story.agent("D", 2.35, 2.45, result=None, has_result=True)
    story.read(9.0, "D", "DONE", result=None)
    story.regrant("D", 1.0)
    for index, op in enumerate(story.ops):
        run_id = op.body.get("run_id") if op.kind == "start" and op.status == 202 else None
        key = {"D": d_key, "B": b_key}.get(str(run_id))
        if key is not None:
            body = {**op.request["body"], "fairness_key": key}
            story.ops[index] = op.model_copy(update={"request": {**op.request, "body": body}})


def test_with_fair_shares_on_a_later_run_of_another_key_may_go_first() -> None:
    story = clean()
    with_d_first(story)
    assert_only_fails(verdict_of(story), "order")  # fair shares off: B's 202 came first

    fair_change(story, -2.0, -1.0)
    verdict = verdict_of(story)
    assert verdict.passed, [(r.name, r.violations) for r in verdict.properties]
    assert "pairs of two fairness keys not compared: 0" not in str(verdict["order"].notes)


def test_with_fair_shares_on_a_later_run_of_the_same_key_may_not_go_first() -> None:
    story = clean()
    with_d_first(story, b_key=LIGHT)
    fair_change(story, -2.0, -1.0)

    assert_only_fails(verdict_of(story), "order")


def test_order_holds_across_keys_where_fair_shares_were_certainly_off() -> None:
    on_after = clean()
    with_d_first(on_after)
    fair_change(on_after, 1.1, 1.2)  # sent after D's grant
    assert_only_fails(verdict_of(on_after), "order")

    maybe_on = clean()
    with_d_first(maybe_on)
    fair_change(maybe_on, 0.9, 5.0)  # sent before D's grant, answered after: may have been on
    assert verdict_of(maybe_on).passed

    off_again = clean()
    with_d_first(off_again)
    fair_change(off_again, -3.0, -2.5)
    fair_change(off_again, -2.0, -1.5, on=False)  # off again, certainly, before D's grant
    assert_only_fails(verdict_of(off_again), "order")

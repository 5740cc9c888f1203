"""Run ids and workflow ids (agent_runner/ids.py): one canonical spelling each."""

from __future__ import annotations

import uuid

import pytest

from agent_runner.ids import RunRef, Scope, ScopeKind, parse_run_id, parse_workflow_id, place_of

BASE = "agent-runner"
USER = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"
RUN = "01a21269-664b-7e42-949e-644fecafa2cb"


@pytest.mark.parametrize(
    "scope",
    [Scope(BASE), Scope(BASE, ScopeKind.USER_ID, USER), Scope(BASE, ScopeKind.AGENT_TYPE, "a-b")],
)
def test_a_run_id_names_its_scope_and_parses_back(scope: Scope):
    ref = RunRef(scope, RUN)
    assert parse_run_id(BASE, ref.run_id) == ref


@pytest.mark.parametrize(
    "alias",
    [
        f"{RUN}~",
        f"{RUN}~u",
        f"{RUN}_1",
        f"{RUN}_01",
        f"{RUN}_0001",
        f"{RUN}~_1",
        f"{RUN}~_\u00b2",  # a superscript two
        f"{RUN}~_\u2460",  # a circled one
        f"{RUN}\u2460",
        f"{RUN}.01~q",
        f"{RUN}\n",
        f"\n{RUN}",
        f"{RUN} ",
        RUN.upper(),
        f"{{{RUN}}}",
        RUN.replace("-", ""),
        f"{RUN}~u{uuid.UUID(USER).hex.upper()}",
        f"{RUN}~u{USER}",
        f"{RUN}~t_\u0661",  # an Arabic-Indic digit one
        f"{RUN}~t²",
        f"{RUN}~tA",
    ],
)
def test_every_other_spelling_is_no_run(alias: str):
    """Finding 5 of the scale issue: aliases each got a watcher of their own."""
    assert parse_run_id(BASE, alias) is None


def test_workflow_ids_say_what_they_are():
    user = Scope(BASE, ScopeKind.USER_ID, USER)
    assert parse_workflow_id(BASE, BASE).slot is None
    assert parse_workflow_id(BASE, f"{BASE}:slot-0").slot == 0
    assert parse_workflow_id(BASE, f"{BASE}:user:{USER}:slot-2").scope == user
    assert place_of(f"{BASE}:user:{USER}").scope == user
    for other in (
        f"{BASE}:slot-01",
        f"{BASE}:slot-+1",
        f"{BASE}:slot-\u0661",
        f"{BASE}:slot-100",
        f"{BASE}:settings",
        f"{BASE}:user:not-a-uuid",
        "zzz-other",
        f"{BASE}x:slot-0",
    ):
        assert parse_workflow_id(BASE, other) is None, other

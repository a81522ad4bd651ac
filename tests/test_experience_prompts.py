"""Experience-model prompt format, SFT targets and spans, the never-raising parser, task variations."""

from __future__ import annotations

import pytest

from dreamgym.config import ConfigError, ExperiencePromptConfig
from dreamgym.experience.bounded_decoding import FORCED_KINDS
from dreamgym.experience.prompts import (
    PARSE_FAIL_REASONS,
    ParseStats,
    Prediction,
    build_messages,
    build_task_messages,
    format_reward,
    format_target,
    parse_task_variations,
    parse_transition,
    system_prompt,
    target_spans,
)
from dreamgym.types import Transition

ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def _demo(state: str, action: str, next_state: str, reward: float, done: bool) -> Transition:
    return Transition(trajectory_id="traj", step=0, env="webshop", source="real", task_id="t0",
                      instruction="other task", state=state, action=action, next_state=next_state,
                      reward=reward, done=done)


# -- prompt ------------------------------------------------------------------------------------

def test_build_messages_exact_text_with_history_and_demo_truncation():
    cfg = ExperiencePromptConfig(history_turns=2, history_state_chars=20, state_chars=40,
                                 demo_state_chars=20, demos_k=2)
    history = [("first page", "search[old]"), ("second  page\n\n  two", "click[b01]"), (ALPHABET, "click[next >]")]
    demos = [_demo("WebShop [SEP] Search", "search[red shirt]", ALPHABET, 0.0, False),
             _demo("item page", "click[buy now]", "Thank you for shopping", 0.75, True),
             _demo("never shown", "x", "y", 1.0, True)]
    msgs = build_messages("  i need a red   shirt ", history, "Back to Search [SEP] " + ALPHABET, "click[b02]",
                          demos, cfg)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == system_prompt(cfg)
    assert msgs[1]["content"] == (
        "Task: i need a red shirt\n"
        "\n"
        "Examples:\n"
        "1. State: WebShop [SEP] Search\n"
        "Action: search[red shirt]\n"
        "Next state: abcdefghij ... vwxyz\n"
        "Reward: 0.0, done: false\n"
        "2. State: item page\n"
        "Action: click[buy now]\n"
        "Next state: Thank you ... pping\n"
        "Reward: 0.75, done: true\n"
        "\n"
        "History:\n"
        "State: second page\ntwo\n"
        "Action: click[b01]\n"
        "State: abcdefghij ... vwxyz\n"
        "Action: click[next >]\n"
        "\n"
        "Current state: Back to Search [SEP] ab ... opqrstuvwxyz\n"
        "Action: click[b02]")
    assert build_messages("  i need a red   shirt ", history, "Back to Search [SEP] " + ALPHABET, "click[b02]",
                          demos, cfg) == msgs                                   # deterministic


def test_build_messages_omits_empty_sections_and_states_the_format():
    cfg = ExperiencePromptConfig(history_turns=0, demos_k=0)
    msgs = build_messages("buy socks", [("a", "b")], "page", "search[socks]",
                          [_demo("s", "a", "n", 0.0, False)], cfg)
    assert msgs[1]["content"] == "Task: buy socks\n\nCurrent state: page\nAction: search[socks]"
    system = msgs[0]["content"]
    assert ("<think>short reasoning about the action's effect</think>\n<state>the next state</state>\n"
            "<reward>0.0</reward>\n<done>false</done>") in system


def test_system_prompt_modes_and_override():
    plain = system_prompt(ExperiencePromptConfig(reasoning=False))
    assert "<think>" not in plain and "<state>the next state</state>\n<reward>0.0</reward>\n<done>false</done>" in plain
    assert system_prompt(ExperiencePromptConfig(system_prompt="custom")) == "custom"
    cfg = ExperiencePromptConfig(system_prompt="custom")
    assert build_messages("t", [], "s", "a", [], cfg)[0] == {"role": "system", "content": "custom"}


def test_prompt_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="history_turns"):
        ExperiencePromptConfig(history_turns=-1)
    with pytest.raises(ConfigError, match="state_chars"):
        ExperiencePromptConfig(state_chars=3)


# -- SFT target and spans ------------------------------------------------------------------------

@pytest.mark.parametrize("reward,text", [(1.0, "1.0"), (0.75, "0.75"), (0.3333, "0.333"), (0, "0.0"),
                                         (-0.0, "0.0"), (0.5, "0.5"), (0.6667, "0.667"), (1, "1.0"), (0.1, "0.1")])
def test_format_reward(reward, text):
    assert format_reward(reward) == text


def test_format_target_exact_strings():
    assert format_target("page  one\n two", 0.3333, True, "buy now ends it") == (
        "<think>buy now ends it</think>\n<state>page one\ntwo</state>\n<reward>0.333</reward>\n<done>true</done>")
    assert format_target("p", 1.0, False) == "<state>p</state>\n<reward>1.0</reward>\n<done>false</done>"
    assert format_target("a <state>b</STATE>", 0.0, False, None) == (
        "<state>a b</state>\n<reward>0.0</reward>\n<done>false</done>")          # our tags never leak in
    with pytest.raises(ValueError, match="outside"):
        format_target("p", 1.5, True)
    with pytest.raises(ValueError):
        format_target("p", float("nan"), True)


def test_target_spans_exact():
    target = format_target("page [SEP] x", 0.75, True, "because")
    spans = target_spans(target)
    assert spans == {"reasoning": (7, 14), "reasoning_block": (0, 22), "state": (30, 42), "state_block": (23, 50),
                     "reward": (59, 63), "done": (79, 83), "outcome": (51, 90)}
    assert target[7:14] == "because" and target[30:42] == "page [SEP] x" and target[59:63] == "0.75"
    assert target[79:83] == "true" and target[51:].startswith("<reward>") and target[0:22] == "<think>because</think>"
    plain = format_target("s", 0.0, False)
    assert target_spans(plain) == {"state": (7, 8), "state_block": (0, 16), "reward": (25, 28), "done": (44, 49),
                                   "outcome": (17, 56)}
    with pytest.raises(ValueError):
        target_spans("no tags")


def test_target_round_trips_through_parser():
    stats = ParseStats()
    target = format_target("Back to Search [SEP] item", 0.333, False, "r")
    assert parse_transition(target, "prev", stats) == Prediction("Back to Search [SEP] item", 0.333, False, "r", None)
    assert parse_transition(format_target("s", 1.0, True), "prev", stats, require_reasoning=False) == \
        Prediction("s", 1.0, True, None, None)
    assert stats.total == 2 and not stats.failed


# -- parser: good outputs ------------------------------------------------------------------------

GOOD = [
    ("<think>R</think>\n<state>S</state>\n<reward>1</reward>\n<done>TRUE</done>", True, ("S", 1.0, True, "R")),
    ("Sure!\n<THINK> R </THINK> <state>\n  S \n</state>\n<reward> 0.50 </reward><done>no</done>\nbye", True,
     ("S", 0.5, False, "R")),
    ("<think>R</think><done>yes</done><reward>0</reward><state>S</state>", True, ("S", 0.0, True, "R")),  # any order
    ("R before a template-opened think</think>\n<state>S</state><reward>.25</reward><done>0</done>", True,
     ("S", 0.25, False, "R before a template-opened think")),
    ("<think>the <state>fake</state> in reasoning is ignored</think><state>S</state><reward>1.0</reward>"
     "<done>1</done>", True, ("S", 1.0, True, "the <state>fake</state> in reasoning is ignored")),
    ("<state>S</state><reward>1e-7</reward><done>false</done>", False, ("S", 1e-7, False, None)),
    ("<state>S</state><reward>1.0000001</reward><done>false</done>", False, ("S", 1.0, False, None)),  # tolerance
    ("<state>S</state><reward>-0.0</reward><done>False</done>", False, ("S", 0.0, False, None)),
    ("< state >S</ STATE ><reward>1</reward><done>true</done>", False, ("S", 1.0, True, None)),
    ("<state>first</state><reward>1</reward><done>true</done><state>loop</state><reward>0</reward>", False,
     ("first", 1.0, True, None)),                                                   # first complete block wins
    ("<state>S</state><reward>1</reward><done>true</done>\n<state>cut off", False, ("S", 1.0, True, None)),
]


@pytest.mark.parametrize("text,require,expected", GOOD)
def test_parse_good_outputs(text, require, expected):
    stats = ParseStats()
    pred = parse_transition(text, "PREV", stats, require_reasoning=require)
    assert pred == Prediction(*expected, parse_fallback=None)
    assert stats.total == 1 and stats.rate() == 0.0


def test_parse_strips_and_caps_state():
    stats = ParseStats()
    pred = parse_transition("<state>  " + "x" * 50 + " </state><reward>0</reward><done>false</done>", "p", stats,
                            require_reasoning=False, max_state_chars=10)
    assert pred.next_state == "x" * 10 and pred.parse_fallback is None


# -- parser: malformed outputs -----------------------------------------------------------------------

BAD = [
    ("hello there", "missing_tags"),
    ("", "missing_tags"),
    ("<think>R</think>the page shows S, reward 1", "missing_tags"),
    ("<think>R</think><state>  \n </state><reward>0</reward><done>false</done>", "empty_state"),
    ("<think>R</think><state>S</state><done>false</done>", "bad_reward"),
    ("<think>R</think><state>S</state><reward>high</reward><done>false</done>", "bad_reward"),
    ("<think>R</think><state>S</state><reward>nan</reward><done>false</done>", "bad_reward"),
    ("<think>R</think><state>S</state><reward>1.5</reward><done>false</done>", "bad_reward"),
    ("<think>R</think><state>S</state><reward>-0.1</reward><done>false</done>", "bad_reward"),
    ("<think>R</think><state>S</state><reward>1_0</reward><done>false</done>", "bad_reward"),
    ("<think>R</think><state>S</state><reward>0</reward>", "bad_done"),
    ("<think>R</think><state>S</state><reward>0</reward><done>maybe</done>", "bad_done"),
    ("<state>S</state><reward>0</reward><done>false</done>", "missing_reasoning"),
    ("<think> </think><state>S</state><reward>0</reward><done>false</done>", "missing_reasoning"),
    ("<think>R <state>S</state><reward>0</reward><done>false</done>", "missing_reasoning"),   # think never closed
    ("<think>R ran out of tokens", "truncated"),
    ("<think>R</think><state>Back to Search [SEP] it", "truncated"),
    ("<think>R</think><state>S</state><reward>0.", "truncated"),
    ("<think>R</think><state>S</state><reward>1</reward><done>tr", "truncated"),
]


@pytest.mark.parametrize("text,reason", BAD)
def test_parse_malformed_outputs_fall_back_with_reason(text, reason):
    stats = ParseStats()
    pred = parse_transition(text, "PREV", stats)
    assert pred == Prediction("PREV", 0.0, False, reasoning=text[:500], parse_fallback=reason)
    assert stats.total == 1 and stats.failed == {reason: 1}


def test_parse_never_raises_and_truncates_fallback_reasoning():
    stats = ParseStats()
    long = "<state>" + "z" * 1000
    assert parse_transition(long, "PREV", stats).reasoning == long[:500]
    assert parse_transition(None, "PREV", stats).parse_fallback == "missing_tags"   # type: ignore[arg-type]
    assert stats.failed == {"truncated": 1, "missing_tags": 1}


def test_parse_stats_counts_metrics_and_merge():
    stats = ParseStats()
    assert stats.rate() == 0.0
    assert stats.as_metrics() == {"wm/parse_fail_rate": 0.0, **{f"wm/parse_fail/{r}": 0.0 for r in PARSE_FAIL_REASONS},
                                  "wm/forced_rate": 0.0, **{f"wm/forced/{k}": 0.0 for k in FORCED_KINDS}}
    for text, _ in BAD[:4]:                                         # 3 missing_tags, 1 empty_state
        parse_transition(text, "p", stats)
    for text, *_ in GOOD[:4]:
        parse_transition(text, "p", stats)
    assert stats.total == 8 and stats.failed == {"missing_tags": 3, "empty_state": 1}
    assert stats.as_metrics() == {
        "wm/parse_fail_rate": 0.5, "wm/parse_fail/missing_tags": 0.375, "wm/parse_fail/empty_state": 0.125,
        "wm/parse_fail/bad_reward": 0.0, "wm/parse_fail/bad_done": 0.0, "wm/parse_fail/missing_reasoning": 0.0,
        "wm/parse_fail/truncated": 0.0, "wm/forced_rate": 0.0, **{f"wm/forced/{k}": 0.0 for k in FORCED_KINDS}}
    stats.count_forced(("state_clipped", "state_closed"))
    stats.count_forced(())
    other = ParseStats()
    parse_transition("<think>x", "p", other)
    parse_transition(GOOD[0][0], "p", other)
    other.count_forced(("state_closed",))
    assert stats.merge(other) is stats
    assert stats.total == 10 and stats.failed == {"missing_tags": 3, "empty_state": 1, "truncated": 1}
    assert stats.forced == {"state_clipped": 1, "state_closed": 2} and stats.forced_any == 2
    m = stats.as_metrics()
    assert (m["wm/forced_rate"], m["wm/forced/state_closed"], m["wm/forced/state_clipped"]) == (0.2, 0.2, 0.1)
    assert stats.as_metrics("eval_wm/")["eval_wm/parse_fail_rate"] == 0.5
    assert PARSE_FAIL_REASONS == ("missing_tags", "empty_state", "bad_reward", "bad_done", "missing_reasoning",
                                  "truncated")


# -- curriculum task generator ---------------------------------------------------------------------

def test_build_task_messages_exact():
    msgs = build_task_messages(["buy a red shirt", "find  socks\nunder 10 dollars"], 3, True, "WebShop shopping site")
    assert msgs == [
        {"role": "system", "content": "You write tasks for an agent in this environment: WebShop shopping site."},
        {"role": "user", "content": "Example tasks:\n1. buy a red shirt\n2. find socks\nunder 10 dollars\n\n"
                                    "Write 3 new tasks that are harder (more or stricter requirements) variations "
                                    "of these. Keep each realistic, feasible and in the same style. Reply with a "
                                    "numbered list, one task per line, nothing else."}]
    assert "easier (fewer or looser requirements)" in build_task_messages(["a"], 1, False, "")[1]["content"]
    assert "are similar variations" in build_task_messages(["a"], 1, None, "")[1]["content"]
    assert build_task_messages(["a"], 1, None, "")[0]["content"] == \
        "You write tasks for an agent in a text-based environment."


def test_parse_task_variations_numbered_list():
    text = ("Here are 4 harder tasks:\n1. Buy a blue cotton shirt under 30 dollars\n2) \"Buy a BLUE cotton shirt "
            "under 30 dollars\"\n3. short\n- Task 4: find a green wool hat, price lower than 20.00 dollars\n"
            "5. i need a red shirt\n6. " + "x" * 301 + "\nHope this helps!")
    assert parse_task_variations(text, exclude=["I need a red  shirt"]) == [
        "Buy a blue cotton shirt under 30 dollars", "find a green wool hat, price lower than 20.00 dollars"]


def test_parse_task_variations_plain_lines_and_junk():
    text = ("<think>plan the tasks</think>\nbuy 10.5 oz coffee beans, decaf\n\n  \n"
            "buy 10.5 oz coffee beans, decaf\nOptions:")
    assert parse_task_variations(text) == ["buy 10.5 oz coffee beans, decaf"]
    assert parse_task_variations("") == []
    assert parse_task_variations(None) == []                                       # type: ignore[arg-type]
    assert parse_task_variations("1.\n2. \n3. a long enough task line", min_chars=5, max_chars=40) == [
        "a long enough task line"]


def test_target_state_clips_only_when_configured():
    from dreamgym.config import ExperiencePromptConfig
    from dreamgym.experience.prompts import target_state

    page = "Back to Search [SEP] Page 1 (Total results: 50) [SEP] " + "item " * 200
    assert target_state(page, ExperiencePromptConfig()) == page
    clipped = target_state(page, ExperiencePromptConfig(next_state_chars=60))
    assert len(clipped) <= 60 and clipped.startswith("Back to Search [SEP] Page 1") and " ... " in clipped


def test_state_left_open_before_the_reward_block_ends_there():
    stats = ParseStats()
    text = "<state>Instruction: [SEP] buy socks [SEP] Search]\n<reward>0.0</reward>\n<done>false</done>"
    p = parse_transition(text, "prev", stats, require_reasoning=False)
    assert (p.next_state, p.reward, p.done, p.parse_fallback) == ("Instruction: [SEP] buy socks [SEP] Search]", 0.0,
                                                                  False, None)
    assert parse_transition("<state>S<reward>1.0</reward>", "prev", stats,   # reward but no done: bad_done
                            require_reasoning=False).parse_fallback == "bad_done"
    assert stats.failed == {"bad_done": 1}

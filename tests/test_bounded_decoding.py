"""Bounded structured decoding of experience-model answers (experience/bounded_decoding.py): the edit rules
with exact cut points, the head length shared with `prompts.target_state`, the token cut, and the rounds
driver on a character-level tokenizer with a scripted looping model (exact final answers)."""

from __future__ import annotations

import math

import pytest

from dreamgym.config import ExperiencePromptConfig
from dreamgym.experience.bounded_decoding import (ELLIPSIS, FORCED_KINDS, MARKER, Edit, complete_answers, cut_index,
                                                  head_chars, plan_edit)
from dreamgym.experience.prompts import ParseStats, parse_transition, target_state


def test_head_chars_is_the_head_target_state_keeps():
    text = " ".join(f"w{i}" for i in range(300))
    for n in (40, 120, 400, 1000):
        clipped = target_state(text, ExperiencePromptConfig(next_state_chars=n))
        head = text[:head_chars(n)].rstrip()
        assert clipped.startswith(head + ELLIPSIS) and len(clipped) <= n
    assert head_chars(400) == 263 and MARKER == " ..."


def test_a_stopped_or_complete_answer_is_left_alone():
    done = "<state>page</state>\n<reward>0.0</reward>\n<done>false</done>"
    assert plan_edit(done, stopped=False, state_chars=400, new_tokens=50, outcome_tokens=8) is None
    assert plan_edit("<state>" + "x " * 300, stopped=True, state_chars=40, new_tokens=50, outcome_tokens=8) is None
    assert plan_edit("<think>why", stopped=True, state_chars=0, new_tokens=50, outcome_tokens=8) is None
    assert plan_edit("no tags at all", stopped=False, state_chars=0, new_tokens=50, outcome_tokens=8) is None
    # reward opened after the state: the outcome round's own business (a parse failure if it runs on)
    assert plan_edit("<state>p</state>\n<reward>0.00000", stopped=False, state_chars=0, new_tokens=50,
                     outcome_tokens=8) is None


def test_think_still_open_at_the_token_budget_is_closed_and_the_state_opened():
    text = "<think>the search returns results  "
    assert plan_edit(text, False, 400, 50, 8) == Edit("think_closed", len(text.rstrip()), "</think>\n<state>", 50)
    assert plan_edit("<think>a</think>\n", False, 400, 50, 8) is None   # closed, nothing opened: missing_tags


def test_runaway_state_is_clipped_to_its_head_then_closed_at_the_budget():
    loop = "<state>Size [SEP] 10 pairs [SEP] 11 pairs [SEP] 12 pairs [SEP] 13 pairs [SEP] 14 pairs"
    content = loop[len("<state>"):]
    assert len(content) == 79 and head_chars(40) == 23
    # past N=40 characters without the marker: cut at the head (23 chars, trailing space dropped), add " ..."
    head = content[:23].rstrip()
    assert head == "Size [SEP] 10 pairs [SE"
    edit = plan_edit(loop, False, 40, 50, 8)
    assert edit == Edit("state_clipped", len("<state>") + 23, " ...", 50)
    # sized to the tail's 12 characters at 2 characters per token, plus the outcome: ceil(1.25 * 12 / 2) + 4 + 8
    assert plan_edit(loop, False, 40, 50, 8, chars_per_token=2.0).tokens == math.ceil(1.25 * 12 / 2) + 4 + 8 == 20
    assert plan_edit(loop, False, 40, 5, 8, chars_per_token=2.0).tokens == 5            # never over new_tokens
    # the tail ran past N too: cut at N characters of content, close, generate the outcome
    tailed = "<state>" + head + " ... pairs [SEP] 13 pairs [SEP] 14 pairs [SEP] 15"
    cut = len("<state>") + len(tailed[len("<state>"):][:40].rstrip())
    assert plan_edit(tailed, False, 40, 50, 8) == Edit("state_closed", cut, "</state>\n<reward>", 8)
    assert tailed[:cut].endswith("pairs [SEP]")


def test_state_open_at_the_token_budget_is_closed_where_it_stands():
    text = "<state>Results [SEP] item one  "
    assert plan_edit(text, False, 400, 50, 8) == Edit("state_closed", len(text.rstrip()), "</state>\n<reward>", 8)
    assert plan_edit(text, False, 0, 50, 8) == Edit("state_closed", len(text.rstrip()), "</state>\n<reward>", 8)


def test_closed_state_without_outcome_gets_the_reward_block_opened():
    text = "<state>Results</state> and then the model rambles on"
    assert plan_edit(text, False, 400, 50, 8) == Edit("outcome_opened", len("<state>Results</state>"), "\n<reward>", 8)


class CharTokenizer:
    """One id per character (id = code point): decode/encode are exact inverses, so cut points are exact."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(map(chr, ids))

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]


def looping_model(calls):
    """A scripted experience model that loops inside a state (like the greedy 135M model on item pages) and
    answers the outcome when its prompt ends with "<reward>". Records (prompt text, budget) per call."""

    def generate(prompts, max_new_tokens):
        outs = []
        for p in prompts:
            text = "".join(map(chr, p))
            calls.append((text, max_new_tokens))
            if text.endswith("<reward>"):
                outs.append([ord(c) for c in "1.0</reward>\n<done>true</done>"])  # stops (< budget)
            else:
                outs.append([ord(c) for c in (" red [SEP] blue [SEP]" * 40)[:max_new_tokens]])
        return outs

    return generate


def test_rounds_clip_the_loop_then_close_it_then_write_the_outcome():
    tok, calls = CharTokenizer(), []
    prompt = tok.encode("PROMPT|")
    first = tok.encode(("<state>Color [SEP] red [SEP] blue [SEP]" + " green [SEP]" * 20)[:60])  # used all 60
    outs, kinds, generated = complete_answers(looping_model(calls), tok, [prompt], [first], first_budget=60,
                                              state_chars=40)
    assert kinds == [("state_clipped", "state_closed")]
    text = tok.decode(outs[0])
    head = "Color [SEP] red [SEP] b"[:head_chars(40)].rstrip()
    tail_budget = math.ceil(1.25 * (40 - len(head) - 5) / 1.0) + 4 + 24            # 1 char per token here
    assert tail_budget == 43
    tail = (" red [SEP] blue [SEP]" * 2)[:tail_budget]
    state = (head + " ..." + tail)[:40].rstrip()
    assert text == f"<state>{state}</state>\n<reward>1.0</reward>\n<done>true</done>"
    # each round's prompt is the prompt plus the kept ids plus the appended ones (the engine's cached prefix)
    assert calls == [("PROMPT|<state>" + head + " ...", tail_budget),
                     ("PROMPT|<state>" + state + "</state>\n<reward>", 24)]
    assert generated == tail_budget + len("1.0</reward>\n<done>true</done>")
    stats = ParseStats()
    pred = parse_transition(text, "prev", stats, require_reasoning=False)
    assert (pred.next_state, pred.reward, pred.done, pred.parse_fallback) == (state, 1.0, True, None)
    assert len(pred.next_state) <= 40


def test_rounds_leave_finished_answers_and_batch_the_rest_in_one_call():
    tok, calls = CharTokenizer(), []
    good = tok.encode("<state>ok</state>\n<reward>0.0</reward>\n<done>false</done>")
    cut_short = tok.encode("<state>Results [SEP] it")                               # budget ran out at 23 ids
    assert len(cut_short) == 23
    outs, kinds, _ = complete_answers(looping_model(calls), tok, [[1], [2]], [good[:23], cut_short], first_budget=23,
                                      state_chars=400, max_rounds=1)
    # the good answer cut off at 23 ids too (not stopped) has a closed state and a broken "<rew": reopened
    assert tok.decode(good[:23]) == "<state>ok</state>\n<rewa"
    assert kinds == [("outcome_opened",), ("state_closed",)] and len(calls) == 2 and {b for _, b in calls} == {24}
    assert tok.decode(outs[0]) == "<state>ok</state>\n<reward>1.0</reward>\n<done>true</done>"
    assert tok.decode(outs[1]) == "<state>Results [SEP] it</state>\n<reward>1.0</reward>\n<done>true</done>"
    outs, kinds, generated = complete_answers(looping_model(calls), tok, [[1]], [good], first_budget=200,
                                              state_chars=400)
    assert outs == [good] and kinds == [()] and generated == 0


def test_cut_index_is_the_longest_prefix_within_the_characters():
    tok = CharTokenizer()
    ids = tok.encode("abcdef")
    assert [cut_index(tok, ids, n) for n in (0, 3, 6, 9)] == [0, 3, 6, 6]


def test_cut_index_with_the_real_tokenizer_never_exceeds_the_characters():
    from dreamgym.config import ModelConfig
    from dreamgym.models.loading import load_tokenizer

    tok = load_tokenizer(ModelConfig(name="tiny-random"))            # the SmolLM2 tokenizer
    text = "Size [SEP] 10 pairs [SEP] 11 pairs [SEP] Buy Now"
    ids = tok.encode(text, add_special_tokens=False)
    for n in range(len(text) + 1):
        j = cut_index(tok, ids, n)
        assert len(tok.decode(ids[:j])) <= n
        assert j == len(ids) or len(tok.decode(ids[:j + 1])) > n


def test_forced_kinds_are_the_metric_names():
    from dreamgym.metrics import METRICS

    assert FORCED_KINDS == ("think_closed", "state_clipped", "state_closed", "outcome_opened")
    assert {f"wm/forced/{k}" for k in FORCED_KINDS} | {"wm/forced_rate"} <= set(METRICS)


@pytest.mark.parametrize("bounded", [True, False])
def test_predictor_runs_both_ways_on_a_tiny_model(bounded):
    from dreamgym.config import ModelConfig
    from dreamgym.experience.predictor import ExperiencePredictor, Query
    from dreamgym.models.generation import GenerationSettings
    from dreamgym.models.loading import load_model

    model, tok = load_model(ModelConfig(name="tiny-random"), for_training=False)
    pred = ExperiencePredictor(model, tok, ExperiencePromptConfig(next_state_chars=40, reasoning=False),
                               GenerationSettings(max_new_tokens=6), bounded=bounded)
    out = pred.predict([Query("buy a lamp", [], "Search page", "search[lamp]")] * 2)
    assert len(out) == 2 and pred.stats.total == 2 and pred.tokens_generated >= 2
    assert all(p.forced == () or bounded for p in out)

"""IOI generator: determinism, templates, labels, corruptions and splits."""

from __future__ import annotations

import re

import pytest

from patchsweep.datasets.ioi import (
    ABBA_TEMPLATES,
    BABA_TEMPLATES,
    DISTRACTOR_BABA_TEMPLATES,
    generate_ioi,
    is_test_pair,
    name_pairs,
)
from patchsweep.datasets.vocab import NAMES
from patchsweep.organism.tokenizer import build_tokenizer

N = 300


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module", params=["swap", "abc"])
def pairs(request):
    return generate_ioi(N, seed=7, corruption=request.param)


WORD = r"\w+|[^\w\s]+"  # the organism tokenizer's pre-tokenizer


def _word_at(text: str, offset: int) -> str:
    return re.match(WORD, text[offset:]).group(0)


def _words(text: str) -> list[str]:
    return re.findall(WORD, text)


def test_same_seed_same_pairs_different_seed_different():
    assert generate_ioi(50, seed=3) == generate_ioi(50, seed=3)
    assert generate_ioi(50, seed=3) != generate_ioi(50, seed=4)
    assert generate_ioi(50, seed=3, split="train") != generate_ioi(50, seed=3, split="test")


def test_at_least_fifteen_templates_in_both_orders(pairs):
    assert len(BABA_TEMPLATES) >= 15
    used = {p.template for p in pairs}
    assert {t for t in used if t in ABBA_TEMPLATES}
    assert {t for t in used if t in BABA_TEMPLATES}
    base = {BABA_TEMPLATES[ABBA_TEMPLATES.index(t)] if t in ABBA_TEMPLATES else t for t in used}
    assert len(base) >= 15


def test_abba_and_baba_orders_occur(pairs):
    orders = {"ABBA" if p.labels["IO"] < p.labels["S1"] else "BABA" for p in pairs}
    assert orders == {"ABBA", "BABA"}
    only = generate_ioi(20, seed=1, order="BABA")
    assert all(p.labels["S1"] < p.labels["IO"] for p in only)


def test_labels_point_at_their_words(pairs, tok):
    for p in pairs:
        io, s = p.correct[0].strip(), p.incorrect[0].strip()
        assert _word_at(p.clean, p.labels["IO"]) == io
        assert _word_at(p.clean, p.labels["S1"]) == s
        assert _word_at(p.clean, p.labels["S2"]) == s
        assert p.labels["IO"] != p.labels["S1"] < p.labels["S2"]
        enc = tok(p.clean, return_offsets_mapping=True, add_special_tokens=False)
        starts = [a for a, _ in enc.offset_mapping]
        for label, word in (("IO", io), ("S1", s), ("S2", s)):
            pos = starts.index(p.labels[label])
            assert enc.input_ids[pos] == tok(f" {word}", add_special_tokens=False).input_ids[0]
        # S1+1 is the very next token after S1
        assert starts.index(p.labels["S1+1"]) == starts.index(p.labels["S1"]) + 1


def test_answers_are_single_tokens_and_lengths_match(pairs, tok):
    for p in pairs:
        for answer in (*p.correct, *p.incorrect):
            ids = tok(answer, add_special_tokens=False).input_ids
            assert len(ids) == 1 and ids[0] != tok.unk_token_id
        clean = tok(p.clean, add_special_tokens=False).input_ids
        corrupted = tok(p.corrupted, add_special_tokens=False).input_ids
        assert len(clean) == len(corrupted)
        assert tok.unk_token_id not in clean + corrupted


def test_prompts_end_before_the_indirect_object(pairs):
    for p in pairs:
        assert p.clean.endswith(" to")
        assert p.correct != p.incorrect


def test_swap_exchanges_subject_and_indirect_object():
    for p in generate_ioi(100, seed=11, corruption="swap"):
        io, s = p.correct[0].strip(), p.incorrect[0].strip()
        assert p.corrupted == p.clean.replace(io, "\0").replace(s, io).replace("\0", s)
        # the corrupted prompt's answer is the clean S: the logit difference flips sign
        assert _word_at(p.corrupted, p.labels["S2"]) == io


def test_abc_uses_three_fresh_distinct_names():
    for p in generate_ioi(100, seed=11, corruption="abc"):
        io, s = p.correct[0].strip(), p.incorrect[0].strip()
        clean, corrupted = _words(p.clean), _words(p.corrupted)
        starts = [m.start() for m in re.finditer(WORD, p.clean)]
        named = {starts.index(p.labels[k]) for k in ("IO", "S1", "S2")}
        new = [corrupted[i] for i in sorted(named)]
        assert len(set(new)) == 3
        assert not set(new) & {io, s}
        assert set(new) <= set(NAMES)
        # everything but the three names is unchanged
        changed = {i for i, (a, b) in enumerate(zip(clean, corrupted, strict=True)) if a != b}
        assert changed == named


def test_splits_hold_out_name_pairs_not_names():
    train, test = set(name_pairs("train")), set(name_pairs("test"))
    assert train and test and not train & test
    assert {n for pair in train for n in pair} == set(NAMES)
    assert 0.1 < len(test) / (len(train) + len(test)) < 0.3
    for split in ("train", "test"):
        for p in generate_ioi(200, seed=5, split=split):
            held_out = is_test_pair(p.correct[0].strip(), p.incorrect[0].strip())
            assert held_out == (split == "test")


def test_bad_options_raise():
    with pytest.raises(ValueError, match="corruption"):
        generate_ioi(1, 0, corruption="nope")
    with pytest.raises(ValueError, match="split"):
        generate_ioi(1, 0, split="dev")
    with pytest.raises(ValueError, match="order"):
        generate_ioi(1, 0, order="AABB")


class TestDistractorTemplates:
    """``distractor=True``: the templates that leave no one-step shortcut to IO."""

    @pytest.fixture(scope="class", params=["swap", "abc"])
    def hard(self, request):
        return generate_ioi(N, seed=11, corruption=request.param, distractor=True)

    def test_only_distractor_templates(self, hard):
        bases = {t.replace("{IO} and {S}", "{S} and {IO}", 1) for t in (p.template for p in hard)}
        assert bases <= set(DISTRACTOR_BABA_TEMPLATES)
        assert bases == set(DISTRACTOR_BABA_TEMPLATES)  # N draws reach every template

    def test_labels_and_answers(self, hard):
        for p in hard:
            io, s = p.correct[0].strip(), p.incorrect[0].strip()
            assert _word_at(p.clean, p.labels["IO"]) == io
            assert _word_at(p.clean, p.labels["S1"]) == _word_at(p.clean, p.labels["S2"]) == s
            assert p.labels["S2"] > max(p.labels["IO"], p.labels["S1"])
            if "C" in p.labels:
                other = _word_at(p.clean, p.labels["C"])
                assert other in NAMES and other not in (io, s)
                assert other in _words(p.corrupted)  # kept by the corruption

    def test_no_one_step_shortcut_finds_io(self, hard):
        """Some prompts mention IO as often as S (counting fails), some end on another name
        than S (taking the latest fails), some put a third name first (the earliest fails)."""
        names = [[w for w in _words(p.clean) if w in NAMES] for p in hard]
        answers = [p.correct[0].strip() for p in hard]
        subjects = [p.incorrect[0].strip() for p in hard]
        assert any(
            ns.count(io) >= ns.count(s) for ns, io, s in zip(names, answers, subjects, strict=True)
        )
        assert any(ns[-1] != s for ns, s in zip(names, subjects, strict=True))
        assert any(ns[0] not in (io, s) for ns, io, s in zip(names, answers, subjects, strict=True))

    def test_held_out_pairs_stay_held_out(self):
        for p in generate_ioi(200, seed=3, split="train", distractor=True):
            assert not is_test_pair(p.correct[0].strip(), p.incorrect[0].strip())

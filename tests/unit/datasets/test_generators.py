"""The generator registry and the Greater-Than, factual and induction generators."""

from __future__ import annotations

import re

import pytest

from patchsweep.datasets import GENERATORS, PromptPair, generate
from patchsweep.datasets.factual import KNOWLEDGE_BASE, RELATIONS
from patchsweep.datasets.greater_than import is_test_year
from patchsweep.datasets.vocab import INDUCTION_POOL, POOLS, render
from patchsweep.organism.tokenizer import build_tokenizer

WORD = r"\w+|[^\w\s]+"  # the organism tokenizer's pre-tokenizer
OPTIONS = {
    "ioi": [{}, {"corruption": "abc"}, {"split": "train"}],
    "greater_than": [{}, {"split": "train"}],
    "factual": [{}, {"corruption": "replace"}],
    "induction": [{}, {"length": 3}, {"length": 12}, {"length": 5, "prefix": 7}],
}
CASES = [(name, opts) for name, variants in OPTIONS.items() for opts in variants]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _word_at(text: str, offset: int) -> str:
    return re.match(WORD, text[offset:]).group(0)


def test_registry_covers_every_task():
    assert set(GENERATORS) == set(OPTIONS)


def test_unknown_generator_names_the_known_ones():
    with pytest.raises(ValueError, match="'nope'") as err:
        generate("nope", 1, 0)
    for name in GENERATORS:
        assert name in str(err.value)


@pytest.mark.parametrize(("name", "opts"), CASES)
def test_deterministic_in_seed(name, opts):
    assert generate(name, 40, 1, **opts) == generate(name, 40, 1, **opts)
    assert generate(name, 40, 1, **opts) != generate(name, 40, 2, **opts)


@pytest.mark.parametrize(("name", "opts"), CASES)
def test_pairs_fit_the_contract(name, opts, tok):
    pairs = generate(name, 100, 3, **opts)
    assert len(pairs) == 100 and all(isinstance(p, PromptPair) for p in pairs)
    for p in pairs:
        clean = tok(p.clean, add_special_tokens=False).input_ids
        corrupted = tok(p.corrupted, add_special_tokens=False).input_ids
        assert len(clean) == len(corrupted)
        assert tok.unk_token_id not in clean + corrupted
        assert p.correct and p.incorrect and not set(p.correct) & set(p.incorrect)
        for answer in (*p.correct, *p.incorrect):
            assert answer.startswith(" ")
            ids = tok(answer, add_special_tokens=False).input_ids
            assert len(ids) == 1 and ids[0] != tok.unk_token_id
        starts = [a for a, _ in tok(p.clean, return_offsets_mapping=True).offset_mapping]
        assert all(offset in starts for offset in p.labels.values())
        assert p.template


def test_vocabulary_pools_are_disjoint():
    words = [w for pool in POOLS.values() for w in pool]
    assert len(words) == len(set(words))
    assert len(POOLS["names"]) >= 32


def test_render_reports_every_occurrence():
    text, offsets = render("{A} met {B}; {A} left", {"A": ["x", "yy"], "B": "b"})
    assert text == "x met b; yy left"
    assert offsets == {"A": [0, 9], "B": [6]}


def test_greater_than_answers_partition_the_years():
    for p in generate("greater_than", 200, 4):
        yy = _word_at(p.clean, p.labels["YY"])
        assert {int(a) for a in p.correct} == set(range(int(yy) + 1, 100))
        assert {int(a) for a in p.incorrect} == set(range(int(yy) + 1))
        assert p.corrupted == p.clean[: p.labels["YY"]] + "01" + p.clean[p.labels["YY"] + 2 :]
        assert _word_at(p.clean, p.labels["XX1"]) == _word_at(p.clean, p.labels["XX2"])
        assert p.clean.endswith(_word_at(p.clean, p.labels["XX2"]))


def test_greater_than_splits_hold_out_start_years():
    for split in ("train", "test"):
        for p in generate("greater_than", 200, 4, split=split):
            xx, yy = (_word_at(p.clean, p.labels[k]) for k in ("XX1", "YY"))
            assert is_test_year(xx, yy) == (split == "test")


def test_factual_answers_come_from_the_knowledge_base():
    assert len(KNOWLEDGE_BASE) >= 64
    for p in generate("factual", 200, 5):
        subject = _word_at(p.clean, p.labels["SUBJ"])
        relation = next(r for r, (t, _) in RELATIONS.items() if t == p.template)
        assert p.correct == (f" {KNOWLEDGE_BASE[(subject, relation)]}",)
        assert p.corrupted == p.clean  # noise corruption happens in embedding space
        assert p.incorrect[0].strip() in RELATIONS[relation][1]


def test_factual_replace_swaps_in_a_subject_with_another_attribute():
    for p in generate("factual", 200, 5, corruption="replace"):
        relation = next(r for r, (t, _) in RELATIONS.items() if t == p.template)
        subject = _word_at(p.clean, p.labels["SUBJ"])
        other = _word_at(p.corrupted, p.labels["SUBJ"])
        assert other != subject
        assert p.incorrect == (f" {KNOWLEDGE_BASE[(other, relation)]}",)
        assert p.corrupted.removeprefix(other) == p.clean.removeprefix(subject)


def test_induction_repeats_and_corrupts_the_first_copy():
    for length in (2, 5, 8):
        for p in generate("induction", 100, 6, length=length):
            words = p.clean.split(" ")
            first, second = words[:length], words[length:]
            assert len(set(first)) == length and set(first) <= set(INDUCTION_POOL)
            assert second == first[:-1] and p.correct == (f" {first[-1]}",)
            bad = p.corrupted.split(" ")
            assert bad[length:] == second and not set(bad[:length]) & set(first)
            assert p.incorrect[0].strip() not in words + bad
            assert _word_at(p.clean, p.labels["ANSWER1"]) == first[-1]
            assert _word_at(p.clean, p.labels["CURRENT1"]) == words[-1]
            assert p.labels["REP2"] == len(" ".join(first)) + 1


def test_induction_prefix_comes_first_unrepeated_and_uncorrupted():
    """A prefix moves the copies along the prompt: without one the answer always sits
    halfway, a position a head can find without reading the tokens."""
    for prefix in (1, 4, 20):
        for p in generate("induction", 50, 7, length=6, prefix=prefix):
            words, bad = p.clean.split(" "), p.corrupted.split(" ")
            before, first, second = words[:prefix], words[prefix : prefix + 6], words[prefix + 6 :]
            assert len(words) == prefix + 11 and second == first[:-1]
            assert not set(before) & set(first) and len(set(before)) == prefix
            assert bad[:prefix] == before and bad[prefix + 6 :] == second
            assert not set(bad[prefix : prefix + 6]) & set(first)
            assert _word_at(p.clean, p.labels["REP1"]) == first[0]
            assert _word_at(p.clean, p.labels["ANSWER1"]) == first[-1]
            assert _word_at(p.clean, p.labels["CURRENT1"]) == words[-1]
            assert _word_at(p.clean, p.labels["REP2"]) == first[0]
    assert generate("induction", 5, 3, length=4, prefix=0) == generate("induction", 5, 3, length=4)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="corruption"):
        generate("factual", 1, 0, corruption="swap")
    with pytest.raises(ValueError, match="relations"):
        generate("factual", 1, 0, relations=["colour"])
    with pytest.raises(ValueError, match="length"):
        generate("induction", 1, 0, length=1)
    with pytest.raises(ValueError, match="length"):
        generate("induction", 1, 0, length=70, prefix=20)  # the pool has too few words
    with pytest.raises(ValueError, match="prefix"):
        generate("induction", 1, 0, prefix=-1)
    with pytest.raises(ValueError, match="split"):
        generate("greater_than", 1, 0, split="dev")

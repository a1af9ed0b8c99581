"""The organism's word-level tokenizer: every pool word and template word is one token.

A word-level vocabulary makes the tasks' hard requirements true by construction: every
name, place, year half and attribute is a single token, so answers are single tokens and
clean/corrupted prompts that differ only in pool words have equal token lengths.

Quirks other code must know:
    * Whitespace is not part of a token (``pre_tokenizers.Whitespace`` splits on it and on
      punctuation runs), so ``" John"`` and ``"John"`` encode to the same single id, and
      ``convert_tokens_to_ids`` takes the bare word (``"John"``, not ``"ĠJohn"``).
    * No BOS is added (there is no post-processor); ``bos_token`` is still set to
      ``<|endoftext|>`` as in GPT-2, for code that prepends it on purpose.
    * ``decode`` joins tokens with single spaces and removes the space before
      punctuation, so it round-trips the generators' prompts but a single token decodes
      without its leading space (``"John"``).
    * Unknown words map to ``<unk>`` rather than failing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from patchsweep.datasets import factual, greater_than, ioi
from patchsweep.datasets.vocab import POOLS, PUNCTUATION

EOS_TOKEN = "<|endoftext|>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (EOS_TOKEN, UNK_TOKEN)
_FIELD = re.compile(r"\{[A-Za-z_]+\}")


def template_texts() -> list[str]:
    """All template strings of the generators, placeholders included."""
    return [
        *ioi.BABA_TEMPLATES,
        *ioi.DISTRACTOR_BABA_TEMPLATES,
        greater_than.TEMPLATE,
        *(template for template, _pool in factual.RELATIONS.values()),
    ]


def split_words(text: str) -> list[str]:
    """Split text the way the tokenizer's pre-tokenizer does."""
    return [word for word, _span in pre_tokenizers.Whitespace().pre_tokenize_str(text)]


def vocabulary() -> list[str]:
    """The token strings in id order: specials, punctuation, pools, then template words.

    The order only depends on the source lists, so the ids are stable across runs.
    """
    words: list[str] = [*SPECIAL_TOKENS, *PUNCTUATION]
    for pool in POOLS.values():
        words.extend(pool)
    for template in template_texts():
        words.extend(split_words(_FIELD.sub(" ", template)))
    return list(dict.fromkeys(words))


def build_tokenizer(words: Iterable[str] | None = None, model_max_length: int = 128):
    """Build the organism tokenizer as a ``transformers`` fast tokenizer.

    Args:
        words: The vocabulary in id order (default: :func:`vocabulary`).
        model_max_length: Longest input the model accepts (its ``n_positions``).

    Returns:
        A ``PreTrainedTokenizerFast`` that ``save_pretrained`` writes as
        ``tokenizer.json`` + ``tokenizer_config.json``, loadable with ``AutoTokenizer``.
    """
    vocab = {word: i for i, word in enumerate(vocabulary() if words is None else words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )

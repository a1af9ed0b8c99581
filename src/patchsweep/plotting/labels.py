"""How figures and the report name layers and positions.

Two things in a results table read wrong when shown as they are:

* **Windows.** A window of ``w`` layers starting at ``layer`` patches layers
  ``layer … min(layer + w, n_layers) − 1``: the engine stops at the last layer. A row
  labelled ``1–2`` on a 2-layer model names a layer that does not exist, so rows are
  labelled by the layers actually patched (``1``; ``0–1`` for a full window).
* **Positions of datasets whose prompts differ.** With ``positions: each`` over several
  prompts, a position that has a role in every prompt is labelled by it (``IO``, ``S2``,
  ``END``, ``REP2``) and every other position by the token of the *first* prompt, which
  the other prompts do not share. An axis mixing the two reads as if all prompts were
  that one. There, positions without a role are shown by their index. One prompt
  (``ioi_single``), or labels that are all roles or all tokens: labels stay as they are.

The number of layers is not in the table; it is taken as its highest layer + 1, which
holds whenever some sweep covers the last layer (every sweep does by default).
"""

from __future__ import annotations

import re

import pandas as pd

# Role names are upper-case identifiers with digits, joined by _ + or -: IO, S1, S1+1,
# SUBJ_LAST, XX1, REP2, END. One letter ("A", "I") is more likely a token than a role.
_ROLE = re.compile(r"[A-Z][A-Z0-9]*(?:[_+\-][A-Z0-9]+)*")


def is_role(label: str) -> bool:
    """Whether a position label names a role (``S2``, ``END``) rather than a token."""
    return len(label) >= 2 and _ROLE.fullmatch(label) is not None


def layer_span(first: int, last: int) -> str:
    """``3`` for one layer, ``3–5`` for a window of layers 3, 4 and 5."""
    return str(first) if last <= first else f"{first}–{last}"


def last_layers(table: pd.DataFrame) -> pd.Series:
    """The last layer each row patches: its window, cut at the table's last layer."""
    top = int(table["layer"].max()) if len(table) else 0
    return (table["layer"] + table["window"] - 1).clip(upper=top).astype(int)


def mixes_roles_and_tokens(table: pd.DataFrame) -> bool:
    """Whether position labels mix roles with tokens of one prompt out of several."""
    if not len(table) or int(table["n_prompts"].max()) <= 1:
        return False
    labels = table.loc[table["position"] >= 0, ["position", "position_label"]].drop_duplicates()
    tokens = [
        label
        for position, label in labels.itertuples(index=False)
        if not is_role(label) and label != str(position)
    ]
    return bool(tokens) and any(is_role(label) for label in labels["position_label"])


def roles_only(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with positions that have no role labelled by index, where labels mix.

    Applied to the whole table at once, so that an attribution sweep and the exact sweep
    it is compared with keep matching labels.
    """
    if not mixes_roles_and_tokens(table):
        return table
    labels = table["position_label"]
    keep = (table["position"] < 0) | labels.map(is_role)
    return table.assign(position_label=labels.where(keep, table["position"].astype(str)))


def shows_indices(sweep: pd.DataFrame) -> bool:
    """Whether some position of ``sweep`` is shown by index although prompts differ."""
    if not len(sweep) or int(sweep["n_prompts"].max()) <= 1:
        return False
    positioned = sweep[sweep["position"] >= 0]
    return bool((positioned["position_label"] == positioned["position"].astype(str)).any())

"""The vocabulary of the tidy tables, shared by the engine that writes them and the
table code that reads them (which must not import the engine: normalize and plot stay
free of nnsight and transformers, and rerun only when their own code changes)."""

# What identifies a patch site in every table, and the per-prompt table's columns.
# ``method`` is exact or attribution (the gradient estimate), so the two join on the rest.
SITE_KEYS = ["sweep", "component", "direction", "layer", "head", "position", "position_label",
             "window", "method"]  # fmt: skip
TABLE_COLUMNS = [*SITE_KEYS, "prompt", "metric"]

"""The patch engine: many patch sites per forward pass, each row patched at its own site.

Activation patching asks, for each site (layer, position, head), how much of the clean
behaviour returns when the corrupted run's activation at that site is replaced by the
clean run's (denoising), or how much is lost when the clean run's is replaced by the
corrupted run's (noising). The definition is one forward pass per site. Here the sites of
a sweep are stacked along the batch dimension instead: every row runs the same target
prompt and, at its own layer, overwrites its own site with the cached source activation.
One forward pass then serves a whole chunk of sites, and the numbers are the same.

Savings keep each pass small without changing a single number:
- a row patched at layer l leaves layers below l exactly as in the cached target run, so
  the blocks below the chunk's lowest layer are skipped and fed the cached residual;
- a row patched at position p leaves positions before p as in the target run: each row
  computes only its own positions p..T−1, packed end to end with the other rows of its
  chunk (:mod:`~patchsweep.engine.packing`), and the target run's cached keys and values
  (:mod:`~patchsweep.engine.prefix`) stand in for the rest;
- only the logits the metric reads are computed: the final position's, or the score
  positions' of a metric over several positions.

Models whose own mask cannot be replaced (flash attention, a sliding window shorter than
the prompt) use padded tiles instead: chunks of rows padded to their earliest patched
position.

The modules, in the order a sweep uses them:

- :mod:`~patchsweep.engine.sites`: a sweep's config → its (layer, head, position) sites;
- :mod:`~patchsweep.engine.inputs`: the target prompts, source activations and answers;
- :mod:`~patchsweep.engine.tiling`: which rows share a pass (memory cap, cost model);
- :mod:`~patchsweep.engine.packing` and :mod:`~patchsweep.engine.prefix`: the packed
  layout, and the cached keys and values it starts from;
- :mod:`~patchsweep.engine.passes`: one pass, in either layout, as per-layer patches;
- :mod:`~patchsweep.engine.sweep`: :func:`run_sweep` (a sweep's config and captured runs →
  its table; what the patch stage and the Python API call), and the loop over chunks,
  checkpoints and remote sessions below it;
- :mod:`~patchsweep.engine.attribution`: attribution patching, every site's effect
  estimated from one forward and one backward pass (``method: attribution``);
- :mod:`~patchsweep.engine.verify`: exact patching of the top of an attribution ranking.
"""

from patchsweep.engine.inputs import PatchInputs
from patchsweep.engine.sites import Sites, build_sites
from patchsweep.engine.sweep import Runs, run_patches, run_sweep
from patchsweep.engine.tiling import rows_per_pass

__all__ = [
    "PatchInputs",
    "Runs",
    "Sites",
    "build_sites",
    "rows_per_pass",
    "run_patches",
    "run_sweep",
]

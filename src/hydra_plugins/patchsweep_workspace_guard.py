"""Hydra imports this module (every module of ``hydra_plugins`` it finds) before it
composes a config, which is the first thing ``dvc exp run -S …`` does: the one moment
a workspace experiment that would delete other experiments' results can still be
refused with nothing changed. See :mod:`patchsweep.workspace_guard`."""

import sys
from pathlib import Path

from patchsweep.workspace_guard import check_dvc_command

check_dvc_command(sys.argv, Path.cwd())

"""Everything a sweep needs before Ray starts: its data, checked and ready.

Runs in the launching process. Bad input surfaces here, before any trial is scheduled.
"""
from __future__ import annotations

from typing import Any


def prepare_data(spec) -> Any:
    """The data set shared by all trials of the sweep (None where trials read their own)."""
    if spec.experiment == "synthetic":
        from ..data.synthetic import cached
        from ..spec.synthetic import load_task_list

        return cached(spec.train_rows, spec.data.val_rows, load_task_list(spec.data.tasks),
                      spec.data.string_length, spec.data.seed)
    if spec.experiment == "gpt":
        from ..spec.gpt import prepare_gpt_data

        return prepare_gpt_data(spec)
    return None

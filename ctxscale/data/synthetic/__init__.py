"""The synthetic task of the study (experiment 1): random bit strings labelled by the XOR of two bits.

A task is a pair (l, a). The label of a string is bit[a-1] XOR bit[l-1] (1-based positions) when
both positions lie inside the string, otherwise a fair coin. Row i of a split uses task i mod T and
the row numbering restarts at 0 in the validation split. A model later sees the first
`context_length` bits plus a one-hot of the task, so a task is predictable only when both of its
bits are visible; the Bayes risk is therefore a step function of the context length.

Strings are stored packed (``np.packbits(..., bitorder="big")``, 13 bytes for 100 bits) and no
string occurs twice in train + validation, so validation measures generalisation and not recall.

Modules, by concern: `dataset` (the set, its packed bits and the exact Bayes risk), `generation`
(drawing and labelling), `distinct` (no string twice), `storage` (files, the cache, the CLI).
Only numpy is imported: ``ctxscale data synthetic`` starts fast, and training code reads the
saved set through memory maps (`load`).
"""
from .dataset import SyntheticSet, bayes_risk, packed_prefix, task_bayes_risk, unpack_bits
from .generation import generate
from .storage import FORMAT_VERSION, cached, default_cache_dir, load, save, write_cli

__all__ = [
    "FORMAT_VERSION",
    "SyntheticSet",
    "bayes_risk",
    "cached",
    "default_cache_dir",
    "generate",
    "load",
    "packed_prefix",
    "save",
    "task_bayes_risk",
    "unpack_bits",
    "write_cli",
]

"""tqdm progress bars on the main process only."""

from __future__ import annotations

from tqdm.auto import tqdm

from forgetmi.utils.logs import is_main_process


def progress(iterable=None, **kwargs):
    """A tqdm bar shown on rank 0 when stderr is a terminal; silent elsewhere."""
    kwargs.setdefault("disable", None if is_main_process() else True)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)

"""Progress bars over the passes of a fit, and whether anyone watches them."""

import sys

from tqdm.auto import tqdm

from ._distributed import is_distributed

__all__ = ["interactive", "progress", "resolve_verbose"]


def interactive():
    """Whether a person is likely watching: a terminal or a notebook.

    Standard error is a terminal, or an IPython kernel (Jupyter) runs the
    code; scripts whose output goes to a file or a pipe and test runners
    are not interactive.
    """
    if "ipykernel" in sys.modules:
        return True
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def resolve_verbose(verbose):
    """``verbose`` as an int: ``"auto"`` is 1 when a person is watching."""
    if isinstance(verbose, str):
        return int(interactive())
    return int(verbose)


def _rank():
    if not is_distributed():
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def progress(iterable, net, *, desc, total=None):
    """``iterable`` with a tqdm bar when ``net.verbose``, on rank 0 only.

    tqdm.auto draws a widget in a notebook and text in a terminal. The bar
    disappears when done (``leave=False``): the table keeps the record.
    """
    if not getattr(net, "verbose", 0) or _rank() != 0:
        return iterable
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    # A generator, not the iterable itself: tqdm.auto's bar calls iter() on
    # an iterable when it is made and again when it is looped over, and each
    # iter() of a DataLoader draws a seed from torch's global generator (and
    # starts its workers), so a bar would change the fit's random stream.
    return tqdm(
        _each(iterable), total=total, desc=desc, leave=False, dynamic_ncols=True
    )


def _each(iterable):
    yield from iterable

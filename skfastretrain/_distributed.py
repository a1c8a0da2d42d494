"""Data-parallel fit: torch.distributed process groups, shards, reductions.

Everything here is a no-op outside a distributed fit. Under one, each rank
trains on its own shard through DistributedDataParallel (the training step of
``_net.FastRetrainNet``), and the head solve all-reduces its Gram statistics,
so every rank ends with the same model.
"""

import os

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, Subset

__all__ = [
    "DataParallelSteps",
    "all_gather_rows",
    "all_reduce_counts",
    "all_reduce_gram",
    "all_reduce_head_statistics",
    "broadcast_seed",
    "is_distributed",
    "local_shard",
    "setup_distributed",
    "sync_batchnorm_stats",
    "train_sampler",
]

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def is_distributed():
    """Whether a torch.distributed process group of more than one rank runs."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device():
    # NCCL only moves CUDA tensors; gloo takes CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def setup_distributed(distributed, device):
    """Resolve ``distributed`` and the device of this rank.

    ``"auto"`` trains data-parallel when a process group is already
    initialized; ``True`` also initializes one from the ``env://`` variables
    that torchrun sets (gloo on CPU, NCCL on CUDA). A bare ``"cuda"`` device
    becomes ``cuda:LOCAL_RANK``, the one GPU per process that torchrun
    expects.

    Returns
    -------
    distributed : bool
    device : str
    """
    if distributed is False or not dist.is_available():
        return False, device
    if distributed is True and not dist.is_initialized():
        missing = [k for k in _ENV if k not in os.environ]
        if missing:
            raise RuntimeError(
                "distributed=True needs an initialized torch.distributed process "
                f"group or the env:// variables that torchrun sets; {missing} "
                "are not set. Launch with `torchrun --nproc_per_node=N script.py` "
                "or call torch.distributed.init_process_group() before fit."
            )
        if device.startswith("cuda"):
            torch.cuda.set_device(_rank_device(device))
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if not is_distributed():
        return False, device
    if device == "cuda":
        device = _rank_device(device)
        torch.cuda.set_device(device)
    return True, device


def _rank_device(device):
    if device != "cuda":
        return device
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def broadcast_seed(seed):
    """Rank 0's seed on every rank: the same freezing draws and shuffles."""
    value = torch.tensor([seed], dtype=torch.int64, device=_comm_device())
    dist.broadcast(value, src=0)
    return int(value.item())


def train_sampler(n_samples, seed):
    """This rank's share of each epoch's global shuffle (padded to be even).

    Every rank must run the same number of steps, so the sampler repeats a
    few rows when ``n_samples`` does not divide evenly. The range stands in
    for the dataset: only its length is used, and the net stays small to
    pickle.
    """
    if n_samples < dist.get_world_size():
        raise ValueError(
            f"{n_samples} samples cannot be shared by {dist.get_world_size()} ranks."
        )
    return DistributedSampler(range(n_samples), shuffle=True, seed=seed)


def local_shard(dataset):
    """Every ``world_size``-th row from this rank's: disjoint, unpadded.

    The head solve sums statistics over the shards, so no row may be counted
    twice.
    """
    rows = range(dist.get_rank(), len(dataset), dist.get_world_size())
    return Subset(dataset, rows)


def all_reduce_gram(acc):
    """Sum a :class:`GramAccumulator` over the ranks, in place."""
    # A row count, or a sum of row weights.
    integer = isinstance(acc.n_samples, int)
    dtype = torch.int64 if integer else torch.float64
    count = torch.tensor(acc.n_samples, dtype=dtype, device=acc.device)
    for tensor in (*acc.tensors(), count):
        dist.all_reduce(tensor)
    acc.n_samples = int(count.item()) if integer else float(count.item())
    return acc


def all_reduce_counts(*counts):
    """The sums of integer ``counts`` over the ranks."""
    total = torch.tensor(counts, dtype=torch.int64, device=_comm_device())
    dist.all_reduce(total)
    return tuple(int(c) for c in total.tolist())


def all_reduce_head_statistics(stats):
    """Sum a :class:`HeadStatistics` over the ranks, in place.

    Every fold's Gram sums (so ``ridge_lambda="auto"`` cross-validates on all
    rows) and the score's sums end up the same on every rank. The rows
    kept for the temperature fit stay local: see :func:`all_gather_rows`.
    """
    if stats.folds is None:
        raise ValueError("A rank saw no rows: use fewer ranks than samples.")
    for acc in stats.folds:
        all_reduce_gram(acc)
    score = stats.score
    if score.sums is not None:
        sums = score.sums.to(_comm_device())
        dist.all_reduce(sums)
        score.sums = sums.cpu()
    return stats


def all_gather_rows(*arrays):
    """Every rank's rows of ``arrays`` (numpy or None), stacked in rank order.

    The temperature fit needs the solved head's logits on the kept rows
    only: gathering those (k values a row) instead of the rows' features
    (d values) keeps the traffic far below the Gram all-reduce.
    """
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, arrays)
    parts = [part for part in gathered if part[-1] is not None]
    if not parts:
        return arrays
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


def sync_batchnorm_stats(layers):
    """Average re-estimated BatchNorm statistics over the ranks' shards.

    Weighted by the batches each rank averaged (``num_batches_tracked``), so
    the result is the average over all batches of all shards.
    """
    for bn in layers:
        weight = bn.num_batches_tracked.to(bn.running_mean)
        parts = [weight, bn.running_mean * weight, bn.running_var * weight]
        for part in parts:
            dist.all_reduce(part)
        total = parts[0].clamp_min(1)
        bn.running_mean.copy_(parts[1] / total)
        bn.running_var.copy_(parts[2] / total)
        bn.num_batches_tracked.copy_(parts[0].to(bn.num_batches_tracked))


class DataParallelSteps:
    """Mixin for a skorch net: the epoch's training steps through DDP.

    In a data-parallel fit (the net's ``ddp_device`` set), the training
    steps run through
    :class:`~torch.nn.parallel.DistributedDataParallel`: only the step sees
    the wrapper, so the callbacks, the head solve's feature passes and
    predict see ``module_`` as the plain module. Freezing changes which
    parameters get gradients from epoch to epoch, so DDP cannot assume a
    static graph: ``find_unused_parameters=True`` lets it find them by
    walking the autograd graph once per step, and frozen parameters, unused
    on every rank, keep no gradient. Each epoch the sampler learns its
    epoch, and at its end every rank takes rank 0's buffers.
    """

    def notify(self, method_name, **cb_kwargs):
        super().notify(method_name, **cb_kwargs)
        if method_name == "on_train_begin" and self.ddp_device is not None:
            # After the callbacks' on_train_begin (a resumed fit has loaded
            # its weights), so the wrapper starts from the fit's state.
            ids = [torch.device(self.ddp_device)]
            ids = ids if self.ddp_device.startswith("cuda") else None
            # Not a component of the net (skorch would register, move and
            # save it): a wrapper around module_ for the training steps only.
            vars(self)["ddp_module_"] = DistributedDataParallel(
                self.module_, device_ids=ids, find_unused_parameters=True
            )

    def on_epoch_begin(self, net, **kwargs):
        super().on_epoch_begin(net, **kwargs)
        sampler = getattr(self, "iterator_train__sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(len(self.history))

    def on_epoch_end(self, net, **kwargs):
        super().on_epoch_end(net, **kwargs)
        if getattr(self, "ddp_module_", None) is not None:
            # Before the callbacks (the head solve): every rank takes rank
            # 0's buffers, as DDP does before each forward; the last step
            # left each rank's BatchNorm statistics updated from its batch.
            for buffer in self.module_.buffers():
                dist.broadcast(buffer, src=0)

    def on_train_end(self, net, **kwargs):
        super().on_train_end(net, **kwargs)
        # The wrapper holds the process group, which cannot be pickled.
        vars(self)["ddp_module_"] = None

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        # The epoch's own steps only: a callback's steps (LRProbe's trial
        # steps on this rank's batches) stay on the plain module.
        vars(self)["in_epoch_"] = training
        try:
            return super().run_single_epoch(
                iterator, training, prefix, step_fn, **fit_params
            )
        finally:
            vars(self)["in_epoch_"] = False

    def train_step_single(self, batch, **fit_params):
        ddp = getattr(self, "ddp_module_", None)
        if ddp is None or not getattr(self, "in_epoch_", False):
            return super().train_step_single(batch, **fit_params)
        plain, self.module_ = self.module_, ddp
        try:
            return super().train_step_single(batch, **fit_params)
        finally:
            self.module_ = plain

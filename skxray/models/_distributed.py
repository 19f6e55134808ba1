"""How one ``fit`` uses more hardware: loader workers, mixed precision, data parallelism.

- **Loader workers** (``num_workers``): torch DataLoader worker processes read,
  decode, resize and augment image files while the network trains. torch
  seeds each worker from a base seed it draws from the loader's generator,
  and the training loader's generator is the estimator's seeded one, so
  workers are reproducible from ``random_state`` and the user's global RNG is
  never touched. Workers are not kept between epochs (no
  ``persistent_workers``): each epoch's workers are seeded from the
  generator's state at that epoch, which ``last.pt`` saves, so a resumed fit
  draws the same augmentations as an uninterrupted one.
- **Mixed precision** (``amp``): forward passes under ``torch.autocast`` in
  bfloat16, on CUDA or on a CPU with native bfloat16 kernels; ``"auto"``
  measures whether it is faster (:mod:`skxray.models._precision`).
  bfloat16 has float32's exponent range, so no loss scaling is needed;
  float16 with a ``GradScaler`` is left to accelerate
  (``Accelerator(mixed_precision="fp16")``).
- **Data parallelism** (``accelerator``): skorch's own
  :class:`skorch.hf.AccelerateMixin` over Hugging Face accelerate, with
  skorch's :class:`skorch.history.DistributedHistory`. No process group or
  gradient all-reduce is written here; accelerate sets them up and wraps the
  module in ``DistributedDataParallel``. This module only works around the
  pitfalls met on CPU processes (gloo) and in scikit-learn's cloning; see
  ``docs/scaling.rst``.
"""

import itertools
import os

import torch
from skorch import NeuralNet
from skorch.hf import AccelerateMixin
from skorch.history import DistributedHistory, History
from skorch.utils import to_tensor

from skxray._data import unweighted
from skxray.models import _precision
from skxray.models._precision import MEASURE

__all__ = [
    "AcceleratedNet",
    "TrainingNet",
    "is_secondary_process",
    "launched_processes",
    "loader_kwargs",
    "resolve_accelerator",
    "resolve_autocast",
    "share_from_main",
    "unwrapped_module",
]

# One key-value store per process for DistributedHistory, made at the first
# distributed fit; each fit then works under a prefix of its own.
_STORE = {}
_FIT_COUNTER = itertools.count()


def launched_processes():
    """How many processes a launcher (torchrun, accelerate launch) started, 1 if none."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_secondary_process():
    """Whether this is a process other than the main one of a distributed run."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_rank() != 0


def loader_kwargs(num_workers, pin_memory):
    """DataLoader settings for the training and validation/prediction iterators."""
    kwargs = {}
    if num_workers:
        # Not persistent: see the module docstring (reproducible resumption).
        kwargs["num_workers"] = int(num_workers)
    if pin_memory:
        # Page-locked host batches copy to the GPU faster.
        kwargs["pin_memory"] = True
    return kwargs


def resolve_autocast(amp, device_type, name):
    """The autocast dtype of a single-process fit: None (float32), bfloat16, or :data:`MEASURE`.

    :data:`MEASURE` (``amp="auto"`` where bfloat16 autocast is native) means
    that the fit decides by timing its own module
    (:func:`skxray.models._precision.measure_precision`).
    """
    supported = _precision.bf16_supported(device_type)
    if amp == "auto":
        return MEASURE if supported and (device_type != "cpu" or _precision.CPU_AUTO_MEASURES) else None
    if not amp:
        return None
    if not supported:
        where = "this GPU" if device_type == "cuda" else f"this {device_type!r} device"
        raise ValueError(
            f"{name}: amp=True trains in bfloat16 autocast, which {where} does not support natively "
            "(on the CPU it needs oneDNN's bfloat16 kernels: AVX-512 BF16 or AMX). Use amp=False or "
            "amp='auto' (float32 there); on a GPU without bfloat16, "
            "accelerator=Accelerator(mixed_precision='fp16') gives float16 with loss scaling."
        )
    return torch.bfloat16


def _check_amp_agrees(amp, accelerator, name):
    mixed = str(accelerator.mixed_precision)
    if amp is True and mixed == "no" or amp is False and mixed != "no":
        raise ValueError(
            f"{name}: amp={amp!r} contradicts the accelerator's mixed_precision={mixed!r}; "
            "with an accelerator, leave amp='auto' and choose the precision in Accelerator(...)."
        )


def resolve_accelerator(accelerator, device, amp, name):
    """The ``accelerate.Accelerator`` a fit trains through, or None for one plain process.

    ``"auto"`` makes one only when a launcher started several processes
    (``WORLD_SIZE`` > 1): on the CPU with ``cpu=True``, since a plain
    ``Accelerator()`` on a machine without GPUs silently trains every process
    alone on all the data.
    """
    world = launched_processes()
    if accelerator is None or accelerator == "auto" and world <= 1:
        return None
    if accelerator == "auto":
        try:
            from accelerate import Accelerator
        except ImportError as exc:
            raise ImportError(
                f"{name}: this script runs as {world} processes (WORLD_SIZE={world}), which train "
                "one model together through Hugging Face accelerate, and accelerate is not "
                "installed. Install it with pip install 'skxray[distributed]', or pass "
                "accelerator=None to train a separate model in each process."
            ) from exc
        cpu = device == "cpu" or device == "auto" and not torch.cuda.is_available()
        on_gpu = not cpu and (amp is True or amp == "auto" and torch.cuda.is_bf16_supported())
        accelerator = Accelerator(cpu=cpu, mixed_precision="bf16" if on_gpu else "no")
    _check_amp_agrees(amp, accelerator, name)
    if device == "cuda" and accelerator.device.type != "cuda":
        raise ValueError(f"{name}: device='cuda' but the accelerator trains on {accelerator.device}.")
    if world > 1 and accelerator.num_processes != world:
        raise ValueError(
            f"{name}: the launcher started {world} processes but the accelerator sees "
            f"{accelerator.num_processes}, so each would train alone on all the data. On a "
            "machine without GPUs create it with Accelerator(cpu=True) (or set ACCELERATE_USE_CPU=1)."
        )
    return accelerator


def share_from_main(accelerator, compute):
    """``compute()`` on the main process, its (picklable) result on every process."""
    if accelerator is None or accelerator.num_processes == 1:
        return compute()
    from accelerate.utils import broadcast_object_list

    box = [None]
    if accelerator.is_main_process:
        try:
            box = [(True, compute())]
        except Exception as exc:  # noqa: BLE001 - re-raised on every process
            # Raised everywhere, so that no process waits for the others forever.
            box = [(False, exc)]
    broadcast_object_list(box, from_process=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def _base_store(accelerator):
    """A TCPStore shared by the processes, on a free port chosen by the main one."""
    key = accelerator.num_processes
    if key not in _STORE:
        host = os.environ.get("MASTER_ADDR", "127.0.0.1")
        store = None
        if accelerator.is_main_process:
            store = torch.distributed.TCPStore(
                host, 0, accelerator.num_processes, is_master=True, wait_for_workers=False
            )
        port = share_from_main(accelerator, lambda: store.port)
        if store is None:
            store = torch.distributed.TCPStore(host, port, accelerator.num_processes, is_master=False)
        _STORE[key] = store
    return _STORE[key]


def unwrapped_module(net):
    """The net's module without accelerate's wrappers (DistributedDataParallel) nor ``torch.compile``'s.

    The compiled module shares its parameters with the plain one, whose
    ``state_dict`` keys lack the ``_orig_mod.`` prefix: saved weights and
    checkpoints read the same with and without ``compile``.
    """
    accelerator = getattr(net, "accelerator", None)
    module = net.module_
    if accelerator is not None:
        module = accelerator.unwrap_model(module, keep_fp32_wrapper=False)
    # torch.compile's OptimizedModule keeps the module it compiled there.
    return getattr(module, "_orig_mod", module)


class TrainingNet(NeuralNet):
    """skorch's ``NeuralNet`` whose forward passes may run under autocast.

    Parameters
    ----------
    autocast_dtype : torch.dtype or None
        bfloat16 for mixed precision, None for float32. The outputs are cast
        back to float32, so the loss and the probabilities are float32.
    mixup : float, default=0.0
        Mixup's Beta parameter (the estimators' ``mixup``); 0 trains on the
        batches as they come.
    """

    def __init__(self, *args, autocast_dtype=None, mixup=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.autocast_dtype = autocast_dtype
        self.mixup = mixup
        # (lam, perm) of the training batch being stepped, read by get_loss.
        self._mixing = None

    def mix_batch(self, batch):
        """A training batch mixed with a shuffled copy of itself (mixup; Zhang et al., ICLR 2018).

        One weight ``lam ~ Beta(mixup, mixup)`` per batch, as in the paper's
        own code: the images become ``lam * x + (1 - lam) * x[perm]``, and
        :meth:`get_loss` the same combination of the losses on both labels
        (and sample weights). Both draws come from torch's global generator,
        which ``fit`` seeds (in a fork that leaves the caller's alone) and
        the checkpoints save, so a resumed fit mixes as an uninterrupted one.

        Returns
        -------
        batch : tuple
            ``(X, y)`` with the mixed images and the labels unchanged; the
            weight and the permutation are kept for :meth:`get_loss`.
        """
        Xi, yi = batch
        x = Xi["x"] if isinstance(Xi, dict) else Xi
        n = len(x)
        alpha = torch.tensor(float(self.mixup))
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(n).to(x.device)
        mixed = x.mul(lam).add_(x[perm], alpha=1.0 - lam)
        self._mixing = (lam, perm)
        return ({**Xi, "x": mixed} if isinstance(Xi, dict) else mixed), yi

    def train_step(self, batch, **fit_params):
        if not self.mixup:
            return super().train_step(batch, **fit_params)
        batch = self.mix_batch(batch)
        try:
            return super().train_step(batch, **fit_params)
        finally:
            self._mixing = None

    def infer(self, x, **fit_params):
        # The module sees the images only, never the sample weights.
        x = unweighted(x)
        if self.autocast_dtype is None:
            return super().infer(x, **fit_params)
        with torch.autocast(torch.device(self.device).type, dtype=self.autocast_dtype):
            out = super().infer(x, **fit_params)
        return out.float()

    def replace_history(self, records):
        """Continue from the epochs in ``records`` (a resumed fit)."""
        self.history = History(records)

    def _get_module(self, name, msg):
        # What skorch's save_params and load_params (the checkpoints'
        # params.pt) read and write: with compile=True the plain module, so
        # that the file's keys lack torch.compile's "_orig_mod." prefix.
        module = super()._get_module(name, msg)
        return getattr(module, "_orig_mod", module)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The criterion's loss, weighted by the batch's sample weights when it has them.

        skorch's recipe for sample weights (its FAQ): the dataset yields them
        beside the images (:class:`skxray._data.SampleWeightedDataset`) and
        the loss reads them from ``X``; the criterion weights and normalises.
        """
        if training and self._mixing is not None:
            # mixup: lam * loss(y) + (1 - lam) * loss(y[perm]); each loss is
            # the criterion's own (class weights, smoothing, sample weights).
            lam, perm = self._mixing
            y_true = to_tensor(y_true, device=self.device)
            X_perm = X
            if isinstance(X, dict) and "sample_weight" in X:
                weight = to_tensor(X["sample_weight"], device=self.device)
                X_perm = {**X, "sample_weight": weight[perm.to(weight.device)]}
            return lam * self._criterion_loss(y_pred, y_true, X, training) + (1.0 - lam) * self._criterion_loss(
                y_pred, y_true[perm.to(y_true.device)], X_perm, training
            )
        return self._criterion_loss(y_pred, y_true, X, training)

    def _criterion_loss(self, y_pred, y_true, X, training):
        """The loss on these labels, with the batch's sample weights when ``X`` carries them."""
        if not (isinstance(X, dict) and "sample_weight" in X):
            return super().get_loss(y_pred, y_true, X=X, training=training)
        y_true = to_tensor(y_true, device=self.device)
        weight = to_tensor(X["sample_weight"], device=self.device)
        return self.criterion_(y_pred, y_true, sample_weight=weight)


class AcceleratedNet(AccelerateMixin, TrainingNet):
    """A :class:`TrainingNet` trained through an ``accelerate.Accelerator``.

    Each ``initialize`` (every fit, including those of clones made by
    ``GridSearchCV``) gets a fresh :class:`~skorch.history.DistributedHistory`
    under a key prefix of its own, so that the processes agree on every
    batch-level record (and thus on ``valid_loss`` and early stopping), and a
    later fit never reads an earlier fit's keys. Every process makes the same
    fits in the same order, so the prefixes match.
    """

    def initialize_history(self):
        accelerator = self.accelerator
        if accelerator.num_processes == 1:
            return super().initialize_history()
        self.history_ = self._distributed_history([])
        return self

    def _distributed_history(self, records):
        accelerator = self.accelerator
        store = torch.distributed.PrefixStore(
            f"skxray-fit{next(_FIT_COUNTER)}", _base_store(accelerator)
        )
        return DistributedHistory(
            records, store=store, rank=accelerator.process_index, world_size=accelerator.num_processes
        )

    def replace_history(self, records):
        if self.accelerator.num_processes == 1:
            return super().replace_history(records)
        self.history_ = self._distributed_history(records)
        return None

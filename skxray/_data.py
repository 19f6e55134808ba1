"""The torch Datasets the classifiers' networks read images from.

This module imports nothing else from skxray, so the estimators, the OOD
detector and the explanation tools can all import it without an import
cycle. How a file becomes an image is passed in (``read``), not imported.
"""

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

__all__ = [
    "DEVICE_MEMORY_SHARE",
    "BatchIterator",
    "ImagePathDataset",
    "MirroredDataset",
    "SampleWeightedDataset",
    "TensorImageDataset",
    "device_free_memory",
    "fits_on_device",
    "private_generator_iterator",
    "unweighted",
    "with_sample_weight",
]

#: The label of an item whose label is unknown (prediction).
NO_LABEL = -1


class ImagePathDataset(Dataset):
    """Read images from disk on demand, so folders larger than memory can train.

    Parameters
    ----------
    paths : sequence of str
        Image files.
    y : tensor of int64 or None
        Encoded labels, one per path; None for prediction.
    read : callable
        ``read(path)`` returns the image as a (channels, height, width)
        array, already resized; it must be picklable for DataLoader workers.
    """

    def __init__(self, paths, y, read):
        self.paths = paths
        self.y = y
        self.read = read

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        x = torch.from_numpy(np.ascontiguousarray(self.read(self.paths[i]), dtype=np.float32))
        y = torch.tensor(NO_LABEL) if self.y is None else self.y[i]
        return x, y


class TensorImageDataset(Dataset):
    """Images already in memory as one (N, C, H, W) float32 tensor."""

    def __init__(self, X, y):
        self.X = X
        self.y = y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        y = torch.tensor(NO_LABEL) if self.y is None else self.y[i]
        return self.X[i], y


class SampleWeightedDataset(Dataset):
    """Items of ``dataset`` with a weight each, as skorch recommends for sample weights.

    Item ``i`` is ``({"x": image, "sample_weight": weight}, label)``: skorch
    hands the dict to the net's ``infer`` and ``get_loss`` as the batch's
    ``X`` (skorch's FAQ, "How do I use sample weights"), where the weights
    scale each image's loss; the network itself only sees ``"x"``.

    Parameters
    ----------
    dataset : Dataset
        One of the datasets above, whose items are ``(image, label)``.
    sample_weight : tensor of float32
        One weight per item.
    """

    def __init__(self, dataset, sample_weight):
        self.dataset = dataset
        self.sample_weight = sample_weight

    @property
    def y(self):
        """The labels of the wrapped dataset (read by the validation accuracy)."""
        return self.dataset.y

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return {"x": x, "sample_weight": self.sample_weight[i]}, y


def with_sample_weight(dataset, sample_weight):
    """``dataset`` with ``sample_weight`` (a tensor), or ``dataset`` itself when it is None."""
    return dataset if sample_weight is None else SampleWeightedDataset(dataset, sample_weight)


def unweighted(x):
    """The images of a batch or item, with the sample weights of :class:`SampleWeightedDataset` left out."""
    if isinstance(x, dict) and "sample_weight" in x:
        return x["x"]
    return x


def private_generator_iterator():
    """iterator_valid settings that keep prediction off the global torch RNG.

    Every DataLoader iteration draws a worker seed from the global RNG unless
    it has a generator of its own; predicting must not change the user's RNG.
    """
    return {"iterator_valid__generator": torch.Generator()}


class MirroredDataset(Dataset):
    """Each image of ``dataset`` flipped left-right (test-time augmentation)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        x, y = self.dataset[index]
        return torch.flip(x, dims=(-1,)), y


#: Share of the device's free memory that in-memory training images may take
#: for :class:`BatchIterator` to move them to the device once; larger arrays
#: stay on the host and are copied batch by batch (pinned, non-blocking).
DEVICE_MEMORY_SHARE = 0.5


def device_free_memory(device):
    """Free bytes of ``device``'s memory, or None for a device without its own (the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return None


def _array_bytes(dataset):
    """Bytes of the in-memory arrays under ``dataset``, or None when it is not made of them."""
    if isinstance(dataset, TensorImageDataset):
        return dataset.X.nbytes + (0 if dataset.y is None else dataset.y.nbytes)
    if isinstance(dataset, SampleWeightedDataset):
        inner = _array_bytes(dataset.dataset)
        return None if inner is None else inner + dataset.sample_weight.nbytes
    if isinstance(dataset, (Subset, MirroredDataset)):
        return _array_bytes(dataset.dataset)
    if isinstance(dataset, TensorDataset):
        return sum(t.nbytes for t in dataset.tensors)
    return None


def _on(owner, tensor, device):
    """``tensor`` (an array of the dataset ``owner``) on ``device``, copied once.

    The copy is kept on ``owner``, so that the training and validation
    subsets of one fit, and its later passes, share one copy.
    """
    if device is None or tensor is None:
        return tensor
    copies = owner.__dict__.setdefault("_device_copies", {})
    key = (id(tensor), str(device))
    if key not in copies:
        copies[key] = (tensor, tensor.to(device))  # the tensor is kept so that its id stays unique
    return copies[key][1]


def _is_on(dataset, device):
    """Whether the images under ``dataset`` have a copy on ``device`` already."""
    while isinstance(dataset, (Subset, MirroredDataset, SampleWeightedDataset)):
        dataset = dataset.dataset
    tensor = dataset.X if isinstance(dataset, TensorImageDataset) else dataset.tensors[0]
    return (id(tensor), str(device)) in dataset.__dict__.get("_device_copies", {})


def _rows(tensor, index):
    """The rows of ``tensor`` at ``index``: a view for a slice, ``index_select`` for an index tensor.

    ``index_select`` copies the rows of a batch of 256 px images about 2.6x
    faster on the CPU than fancy indexing (``tensor[index]``) does.
    """
    return tensor[index] if isinstance(index, slice) else tensor.index_select(0, index)


def _batch_taker(dataset, device):
    """``take(index)``: the batch of ``dataset`` at ``index`` (a slice or an index tensor), or None.

    The batch is what a DataLoader would collate from the items, taken from
    the arrays by one slice or fancy index instead of image by image.
    """
    if isinstance(dataset, TensorImageDataset):
        X, y = _on(dataset, dataset.X, device), _on(dataset, dataset.y, device)
        def take_images(i):
            x = _rows(X, i)
            labels = torch.full((len(x),), NO_LABEL, dtype=torch.long, device=X.device) if y is None else _rows(y, i)
            return x, labels

        return take_images
    if isinstance(dataset, SampleWeightedDataset):
        inner, weight = _batch_taker(dataset.dataset, device), _on(dataset, dataset.sample_weight, device)
        if inner is None:
            return None

        def take_weighted(i):
            x, y = inner(i)
            return {"x": x, "sample_weight": _rows(weight, i)}, y

        return take_weighted
    if isinstance(dataset, Subset):
        inner = _batch_taker(dataset.dataset, device)
        indices = torch.as_tensor(dataset.indices, dtype=torch.long)
        return None if inner is None else lambda i: inner(_rows(indices, i))
    if isinstance(dataset, MirroredDataset):
        inner = _batch_taker(dataset.dataset, device)
        if inner is None:
            return None

        def take_mirrored(i):
            x, y = inner(i)
            return torch.flip(x, dims=(-1,)), y

        return take_mirrored
    if isinstance(dataset, TensorDataset):
        tensors = [_on(dataset, t, device) for t in dataset.tensors]
        return lambda i: [_rows(t, i) for t in tensors]
    return None


def _to_device(batch, device):
    """``batch`` (tensors, dicts, lists) copied to ``device`` from pinned memory, without blocking."""
    if isinstance(batch, torch.Tensor):
        return batch.pin_memory().to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return type(batch)(_to_device(v, device) for v in batch)


class BatchIterator:
    """skorch's ``iterator_train`` / ``iterator_valid`` for images held in memory.

    When the dataset is made of in-memory tensors (:class:`TensorImageDataset`,
    with sample weights, a skorch validation ``Subset`` of one, its mirror
    image, a ``TensorDataset``), each batch is one slice (in order) or one
    fancy index (shuffled) of the arrays: no per-image ``__getitem__``, no
    collate. The batches and their order are exactly those of the
    ``DataLoader`` it replaces, and it draws the same numbers from
    ``generator`` (a seed, then the permutations of ``RandomSampler``), so a
    fit, and a fit resumed from a checkpoint, give the same model as with the
    DataLoader. Any other dataset (image files), worker processes, or a
    ``collate_fn`` that is not skxray's augmentation fall back to a
    ``DataLoader`` with the same settings.

    Parameters
    ----------
    dataset : torch Dataset
    batch_size : int, default=1
    shuffle : bool, default=False
    generator : torch.Generator or None, default=None
        Draws the order; None draws from the global torch RNG, as a DataLoader does.
    collate_fn : callable or None, default=None
        An object with an ``augment_batch(x)`` method (skxray's training
        augmentation) is applied to each batch's images; any other callable
        makes the iterator a DataLoader. When it has ``batched = True`` (it
        augments whole batches) it runs on the device, after the copy.
    device : str, torch.device or None, default=None
        The device the network runs on. When the arrays take at most
        ``device_memory_share`` of its free memory (:func:`device_free_memory`)
        they are moved there once, on the first iteration; otherwise batches
        are copied from pinned memory without blocking (CUDA) or stay on the
        host (CPU). Images to augment one at a time (``collate_fn`` not
        ``batched``) stay on the host.
    device_memory_share : float, default=DEVICE_MEMORY_SHARE
    drop_last : bool, default=False
    **loader_kwargs
        Further DataLoader settings; any besides ``num_workers=0`` and
        ``pin_memory`` make the iterator a DataLoader.
    """

    def __init__(
        self,
        dataset,
        batch_size=1,
        shuffle=False,
        generator=None,
        collate_fn=None,
        device=None,
        device_memory_share=DEVICE_MEMORY_SHARE,
        drop_last=False,
        **loader_kwargs,
    ):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.collate_fn = collate_fn
        self.drop_last = drop_last
        self.device = None if device is None else torch.device(device)
        self._take = None
        batched = (collate_fn is None or hasattr(collate_fn, "augment_batch")) and not (
            set(loader_kwargs) - {"num_workers", "pin_memory"} or loader_kwargs.get("num_workers")
        )
        nbytes = _array_bytes(dataset) if batched else None
        if nbytes is None:
            self._loader = DataLoader(
                dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                collate_fn=collate_fn, drop_last=drop_last, **loader_kwargs,
            )
            return
        self._augment_on_device = getattr(collate_fn, "batched", False)
        self.resident_ = self.device is not None and (collate_fn is None or self._augment_on_device) and (
            _is_on(dataset, self.device) or fits_on_device(nbytes, self.device, device_memory_share)
        )
        self._copy_to = None
        if not self.resident_ and self.device is not None and self.device.type == "cuda":
            self._copy_to = self.device
        # The device copies live on the datasets, so that a fit moves its arrays once, not every epoch.
        self._take = _batch_taker(dataset, self.device if self.resident_ else None)

    def __len__(self):
        if self._take is None:
            return len(self._loader)
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self, n):
        """The indices of one pass, drawn as DataLoader and RandomSampler draw them."""
        # The DataLoader's iterator draws a base seed for its workers first.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        if not self.shuffle:
            return None
        generator = self.generator
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        order = torch.randperm(n, generator=generator)
        # RandomSampler draws a second permutation, of which it yields nothing.
        torch.randperm(n, generator=generator)
        return order

    def __iter__(self):
        if self._take is None:
            yield from self._loader
            return
        n = len(self.dataset)
        order = self._order(n)
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            index = slice(start, min(start + self.batch_size, n))
            x, y = self._take(index if order is None else order[index])
            if self.collate_fn is not None and not self._augment_on_device:
                x = self.collate_fn.augment_batch(x)
            if self._copy_to is not None:
                x, y = _to_device((x, y), self._copy_to)
            if self._augment_on_device:
                x = self.collate_fn.augment_batch(x)
            yield x, y


def fits_on_device(nbytes, device, share=DEVICE_MEMORY_SHARE):
    """Whether ``nbytes`` take at most ``share`` of ``device``'s free memory (False on the CPU)."""
    free = device_free_memory(device)
    return free is not None and nbytes <= share * free

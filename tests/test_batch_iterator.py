"""skxray._data.BatchIterator: whole batches of in-memory arrays instead of a DataLoader.

It must be a drop-in replacement: the same batches in the same seeded order,
the same draws from the generator (so resumption still works), the same model,
and prediction in the order of the images. Placement on the device is tested
with a simulated free-memory query, since the tests run on the CPU.
"""

import numpy as np
import pytest
import torch
from skorch.dataset import ValidSplit
from torch.utils.data import DataLoader

import skxray._data as data
from skxray._data import (
    BatchIterator,
    MirroredDataset,
    TensorImageDataset,
    with_sample_weight,
)
from skxray.augmentation import Compose, RandomFlip, RandomRotation, xray_augmentation
from skxray.models import CNNClassifier
from skxray.models._base import _AugmentingCollate


def _arrays(n=23, seed=0):
    rng = np.random.RandomState(seed)
    X = torch.from_numpy(rng.rand(n, 1, 8, 8).astype(np.float32))
    y = torch.as_tensor(rng.randint(0, 3, n), dtype=torch.long)
    w = torch.as_tensor(rng.rand(n), dtype=torch.float32)
    return X, y, w


def _datasets():
    X, y, w = _arrays()
    plain = TensorImageDataset(X, y)
    weighted = with_sample_weight(plain, w)
    train, valid = ValidSplit(0.25, stratified=True, random_state=1)(weighted, y.numpy())
    return {
        "plain": plain,
        "unlabelled": TensorImageDataset(X, None),
        "weighted": weighted,
        "train_subset": train,
        "valid_subset": valid,
        "mirrored": MirroredDataset(plain),
        "features": torch.utils.data.TensorDataset(X.reshape(len(X), -1), y),
    }


def _flat(batch):
    """A batch as a list of tensors (images, weights, labels), to compare exactly."""
    x, y = batch
    if isinstance(x, dict):
        return [x["x"], x["sample_weight"], y]
    return [x, y]


def _assert_same_batches(ours, theirs):
    ours, theirs = list(ours), list(theirs)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        for ta, tb in zip(_flat(a), _flat(b), strict=True):
            assert ta.dtype == tb.dtype
            assert torch.equal(ta, tb)


@pytest.mark.parametrize("name", list(_datasets()))
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
def test_yields_the_batches_of_the_dataloader_in_the_seeded_order(name, shuffle, drop_last):
    dataset = _datasets()[name]
    ours_generator, their_generator = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    ours = BatchIterator(dataset, batch_size=5, shuffle=shuffle, generator=ours_generator, drop_last=drop_last)
    theirs = DataLoader(dataset, batch_size=5, shuffle=shuffle, generator=their_generator, drop_last=drop_last)
    assert ours._take is not None, "an in-memory dataset must take the batched path"
    assert len(ours) == len(theirs)
    for _ in range(3):  # epochs: each draws a new order
        _assert_same_batches(ours, theirs)
    # The same numbers drawn: a checkpoint of the generator resumes the same order.
    assert torch.equal(ours_generator.get_state(), their_generator.get_state())


def test_without_a_generator_it_draws_from_the_global_rng_as_the_dataloader_does():
    dataset = _datasets()["plain"]
    torch.manual_seed(3)
    theirs = list(DataLoader(dataset, batch_size=4, shuffle=True))
    after_theirs = torch.get_rng_state()
    torch.manual_seed(3)
    ours = list(BatchIterator(dataset, batch_size=4, shuffle=True))
    _assert_same_batches(ours, theirs)
    assert torch.equal(torch.get_rng_state(), after_theirs)


def _flip_some(image):
    """A user's augmentation (not skxray's): a callable on one image, drawing from torch's RNG."""
    return image.flip(-1) if torch.rand(()).item() < 0.5 else image


def test_a_custom_augmentation_draws_per_image_as_the_collate_did():
    dataset = _datasets()["train_subset"]
    collate = _AugmentingCollate(Compose([RandomFlip(), _flip_some]))
    assert not collate.batched  # a custom step keeps the whole augmentation per image
    batches = {}
    for kind, make in {"ours": BatchIterator, "theirs": DataLoader}.items():
        torch.manual_seed(5)
        it = make(dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(2), collate_fn=collate)
        batches[kind] = list(it)
    _assert_same_batches(batches["ours"], batches["theirs"])
    images = torch.cat([x["x"] for x, _ in batches["ours"]])
    originals = torch.cat([x["x"] for x, _ in BatchIterator(dataset, batch_size=4, shuffle=True,
                                                              generator=torch.Generator().manual_seed(2))])
    assert not torch.equal(images, originals)  # the augmentation did change the images


def test_skxray_augmentations_augment_whole_batches():
    """Each batch is the plain batch through ``augment_batch``, with the same draws from the global RNG."""
    dataset = _datasets()["train_subset"]
    augment = Compose([RandomFlip(), RandomRotation(degrees=20)])
    collate = _AugmentingCollate(augment)
    assert collate.batched
    torch.manual_seed(5)
    ours = list(BatchIterator(dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(2),
                              collate_fn=collate))
    plain = list(BatchIterator(dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(2)))
    torch.manual_seed(5)
    expected = [({**x, "x": augment.augment_batch(x["x"])}, y) for x, y in plain]
    _assert_same_batches(ours, expected)
    assert not torch.equal(torch.cat([x["x"] for x, _ in ours]), torch.cat([x["x"] for x, _ in plain]))


def test_falls_back_to_a_dataloader_for_files_workers_and_other_collates():
    X, y, _ = _arrays()
    plain = TensorImageDataset(X, y)
    assert BatchIterator(plain, num_workers=2)._take is None
    assert BatchIterator(plain, collate_fn=lambda batch: batch)._take is None
    assert BatchIterator(plain, sampler=range(len(X)))._take is None
    paths = data.ImagePathDataset(["a.png"], None, read=None)
    assert BatchIterator(paths)._take is None


def test_arrays_move_to_the_device_only_when_they_fit(monkeypatch):
    """The free-memory query is simulated; 'meta' stands in for a GPU (it holds no data)."""
    X, y, w = _arrays()

    def fresh():  # a dataset without a device copy yet
        return with_sample_weight(TensorImageDataset(X, y), w)

    dataset = fresh()
    nbytes = X.nbytes + y.nbytes + w.nbytes
    free = {"bytes": 2 * nbytes}
    monkeypatch.setattr(data, "device_free_memory", lambda device: free["bytes"])

    resident = BatchIterator(dataset, batch_size=8, device="meta")
    assert resident.resident_
    x, y_batch = next(iter(resident))
    assert x["x"].device.type == "meta" and y_batch.device.type == "meta"
    assert x["sample_weight"].device.type == "meta"

    # Over the stated share of the free memory: the host path, batches on the CPU.
    free["bytes"] = int(nbytes / data.DEVICE_MEMORY_SHARE) - 1
    host = BatchIterator(fresh(), batch_size=8, device="meta")
    assert not host.resident_
    x, y_batch = next(iter(host))
    assert x["x"].device.type == "cpu"
    assert torch.equal(x["x"], X[:8]) and torch.equal(y_batch, y[:8])
    # A smaller share of the same free memory also keeps them on the host.
    free["bytes"] = 2 * nbytes
    assert not BatchIterator(fresh(), device="meta", device_memory_share=0.25).resident_
    # skxray's augmentations run on the device, on the batch already moved there.
    free["bytes"] = 2 * nbytes
    augmenting = BatchIterator(fresh(), batch_size=8, device="meta", collate_fn=_AugmentingCollate(RandomFlip()))
    assert augmenting.resident_
    x, _ = next(iter(augmenting))
    assert x["x"].device.type == "meta" and x["x"].shape == (8, 1, 8, 8)
    # A user's per-image augmentation keeps the images on the host, where it runs.
    assert not BatchIterator(fresh(), device="meta", collate_fn=_AugmentingCollate(_flip_some)).resident_


def test_one_device_copy_per_fit(monkeypatch):
    """The training and validation subsets and later passes share the arrays moved once."""
    X, y, w = _arrays()
    weighted = with_sample_weight(TensorImageDataset(X, y), w)
    train, valid = ValidSplit(0.25, stratified=True, random_state=1)(weighted, y.numpy())
    moved = []
    real_to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **k: moved.append(t.shape) or real_to(t, *a, **k))
    monkeypatch.setattr(data, "device_free_memory", lambda device: 10 * X.nbytes)
    for dataset in (train, valid, train, weighted):
        list(BatchIterator(dataset, batch_size=4, device="meta"))
    assert sorted(moved) == sorted([X.shape, y.shape, w.shape])
    # Free memory taken by the first copy does not send later passes back to the host.
    monkeypatch.setattr(data, "device_free_memory", lambda device: 0)
    assert BatchIterator(valid, device="meta").resident_
    assert not BatchIterator(with_sample_weight(TensorImageDataset(X.clone(), y), w), device="meta").resident_


def test_the_cpu_has_no_device_memory_of_its_own():
    assert data.device_free_memory("cpu") is None
    X, y, _ = _arrays()
    assert not BatchIterator(TensorImageDataset(X, y), device="cpu").resident_


@pytest.fixture(scope="module")
def images():
    rng = np.random.RandomState(0)
    X = rng.rand(48, 1, 32, 32).astype(np.float32)
    y = np.array(["a", "b"] * 24)
    X[y == "b", :, 8:24, 8:24] += 0.5
    return X, y


def _fit(images, **params):
    X, y = images
    weights = np.linspace(0.5, 2.0, len(y))
    settings = dict(image_size=32, max_epochs=2, batch_size=8, random_state=0, ood=False)
    return CNNClassifier(**{**settings, **params}).fit(X, y, sample_weight=weights)


def _same_weights(a, b):
    sa, sb = a.module_.state_dict(), b.module_.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("augment", [None, _flip_some])
def test_the_estimator_trains_the_model_the_dataloader_trained(images, augment, monkeypatch):
    """Sample weights, a validation split and a per-image augmentation through both paths: the same weights.

    (skxray's own augmentations draw per batch on the arrays and per image
    from files, so there the two paths give different, equally valid models.)
    """
    batched = _fit(images, augment=augment)
    monkeypatch.setattr(data, "_array_bytes", lambda dataset: None)  # every iterator a DataLoader
    loader = _fit(images, augment=augment)
    assert isinstance(loader.net_.get_iterator(loader.get_dataset(images[0])), BatchIterator)
    assert loader.net_.get_iterator(loader.get_dataset(images[0]))._take is None
    assert _same_weights(batched, loader)
    assert [h["train_loss"] for h in batched.history_] == [h["train_loss"] for h in loader.history_]


@pytest.mark.parametrize("augment", [None, xray_augmentation("strong")])
def test_one_random_state_gives_one_model(images, augment):
    a, b = _fit(images, augment=augment), _fit(images, augment=augment)
    assert _same_weights(a, b)
    assert not _same_weights(a, _fit(images, augment=augment, random_state=1))


def test_batched_augmentation_trains_another_model_than_no_augmentation(images):
    """The batched augmentation does reach the network during fit (and only the training batches)."""
    augmented, plain = _fit(images, augment=xray_augmentation("strong")), _fit(images)
    assert not _same_weights(augmented, plain)


def test_prediction_keeps_the_order_of_the_images(images):
    X, _ = images
    model = _fit(images)
    proba = model.predict_proba(X)
    order = np.random.RandomState(4).permutation(len(X))
    np.testing.assert_allclose(model.predict_proba(X[order]), proba[order], rtol=1e-5, atol=1e-6)
    # Each image alone (batches of one) gives its own row.
    for i in (0, 17, 47):
        np.testing.assert_allclose(model.predict_proba(X[i : i + 1])[0], proba[i], rtol=1e-5, atol=1e-6)

"""Predict over a large set of image files on a Dask cluster.

A saved model (a folder written by ``estimator.save``) scores many image
files on the workers of a `dask.distributed <https://distributed.dask.org>`_
cluster: the files are split into partitions, each worker loads the model
*once*, from its saved folder, when it joins (a worker plugin), and scores
the partitions it is given. Only paths travel: the file paths to the
workers, the model's folder name to the plugin; the network is never
pickled. Results come back in the order of the input files, whatever the
order in which the partitions finish, and a file that cannot be read is
reported with its reason while every readable image is still answered,
as ``skxray predict`` does without Dask.

:func:`read_images` and :func:`score_images` are what each worker runs on
its partition, and also what ``skxray predict`` runs in one process, so
both ways give the same probabilities and the same abstentions.

Install the ``dask`` extra (``pip install "skxray[dask]"``); this module
imports without it, and :class:`DaskPredictor` then says what is missing.
"""

import logging
import math
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DaskPredictor",
    "FilePredictions",
    "MAX_PARTITION_SIZE",
    "SHIFT_TEST_MAX_IMAGES",
    "predict_files",
    "read_images",
    "score_images",
]

#: Most images in one partition: a partition is read into memory at once
#: (128 RGB images of 224 px are 77 MB of float32).
MAX_PARTITION_SIZE = 128
#: Partitions per worker when the size is chosen automatically: several, so
#: that one slow partition does not leave the other workers idle at the end.
_PARTITIONS_PER_WORKER = 4
#: Most images the shift test reads on the cluster. ``skxray.ood.shift_test``
#: itself compares a random 2,000 of a larger batch, so up to this size the
#: Dask path tests exactly the images the one-process path tests.
SHIFT_TEST_MAX_IMAGES = 2000


# --------------------------------------------------------------------------
# What one process (a worker, or skxray predict without Dask) runs


def read_images(model, files):
    """Read image files as a fitted model takes them, keeping the unreadable ones apart.

    Each file is read with :func:`skxray.io.read_image` and resized to the
    model's input shape with its ``keep_aspect``, as in training.

    Parameters
    ----------
    model : fitted skxray classifier
        Gives ``input_shape_`` and ``keep_aspect``.
    files : sequence of str or path-like
        The image files, in any format :func:`skxray.io.read_image` reads.

    Returns
    -------
    X : ndarray of shape (n_readable, channels, height, width)
        The readable images, float32, in the order of ``files``.
    readable : list of str
        Their files.
    unreadable : list of (str, str)
        ``(file, reason)`` of each file that could not be read, in order.
    """
    from skxray.io import ImageReadError, read_image
    from skxray.preprocessing import resize_image

    channels, height, width = model.input_shape_
    images, readable, unreadable = [], [], []
    for file in files:
        try:
            img = read_image(file, as_gray=channels == 1)
        except (ImageReadError, OSError, ValueError) as exc:
            unreadable.append((str(file), str(exc)))
            continue
        img = img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)
        images.append(resize_image(img, (height, width), keep_aspect=model.keep_aspect))
        readable.append(str(file))
    X = np.stack(images) if images else np.empty((0, channels, height, width), dtype=np.float32)
    return X, readable, unreadable


def score_images(model, X):
    """Probabilities and, with a detector, abstentions of a batch of images.

    Parameters
    ----------
    model : fitted skxray classifier
    X : ndarray of shape (n_samples, channels, height, width)
        Images as :func:`read_images` returns them.

    Returns
    -------
    scores : dict
        ``proba`` (``predict_proba``); and, when the model has an
        out-of-distribution detector (``ood_``), ``answers`` (labels or
        ``"uncertain"``, from ``predict_with_abstention``), ``ood_scores``,
        ``out_of_distribution`` (score above the detector's threshold) and
        ``reasons`` (why each image is ``"uncertain"``: ``"distance"``,
        ``"lung check"``, ``"low confidence"``, comma-separated; ``""`` when
        answered); these four are None without a detector.
    """
    has_detector = getattr(model, "ood_", None) is not None
    if not len(X):
        empty = np.empty(0)
        return {
            "proba": np.empty((0, len(model.classes_))),
            "answers": np.empty(0, dtype=object) if has_detector else None,
            "ood_scores": empty if has_detector else None,
            "out_of_distribution": empty.astype(bool) if has_detector else None,
            "reasons": np.empty(0, dtype=object) if has_detector else None,
        }
    scores = {"proba": model.predict_proba(X), "answers": None, "ood_scores": None,
              "out_of_distribution": None, "reasons": None}
    if has_detector:
        answers, distances, reasons = model.predict_with_abstention(X, return_scores=True, return_reasons=True)
        scores.update(
            answers=answers, ood_scores=distances, out_of_distribution=distances > model.ood_.threshold_,
            reasons=reasons,
        )
    return scores


@dataclass
class FilePredictions:
    """What :meth:`DaskPredictor.predict` returns: one entry per readable file, in input order.

    Attributes
    ----------
    files : list of str
        The readable files, in the order they were given.
    classes : ndarray
        The model's ``classes_``: the columns of ``proba``.
    proba : ndarray of shape (n_files, n_classes)
        ``predict_proba`` of each file.
    answers : ndarray of object or None
        ``predict_with_abstention``: a class or ``"uncertain"``; None when
        the model has no out-of-distribution detector.
    ood_scores : ndarray of float or None
        The detector's score of each image (None without a detector).
    out_of_distribution : ndarray of bool or None
        Whether the score is above the detector's threshold.
    reasons : ndarray of str or None
        Why each image is ``"uncertain"`` (``predict_with_abstention``'s
        ``return_reasons``): ``""`` when answered; None without a detector.
    unreadable : list of (str, str)
        ``(file, reason)`` of each file that could not be read, in input order.
    n_partitions : int
        Partitions the files were split into (one task each).
    partition_size : int
        Most files in one partition.
    """

    files: list
    classes: np.ndarray
    proba: np.ndarray
    answers: np.ndarray | None
    ood_scores: np.ndarray | None
    out_of_distribution: np.ndarray | None
    unreadable: list
    n_partitions: int
    partition_size: int
    reasons: np.ndarray | None = None


def _assemble(parts, n_partitions, partition_size):
    """One :class:`FilePredictions` from partition results, put back in partition order.

    ``parts`` holds ``(index, classes, readable, unreadable, scores)`` in any
    order (the order the partitions finished in); they are placed by
    ``index``, never appended as they come.
    """
    ordered = [None] * n_partitions
    for index, *rest in parts:
        ordered[index] = rest
    if any(part is None for part in ordered):
        missing = [i for i, part in enumerate(ordered) if part is None]
        raise RuntimeError(f"partitions {missing} returned no result")
    classes = ordered[0][0]

    def joined(key):
        arrays = [part[3].get(key) for part in ordered]
        return None if arrays[0] is None else np.concatenate(arrays)

    return FilePredictions(
        files=[f for part in ordered for f in part[1]],
        classes=classes,
        proba=joined("proba"),
        answers=joined("answers"),
        ood_scores=joined("ood_scores"),
        out_of_distribution=joined("out_of_distribution"),
        reasons=joined("reasons"),
        unreadable=[u for part in ordered for u in part[2]],
        n_partitions=n_partitions,
        partition_size=partition_size,
    )


# --------------------------------------------------------------------------
# The workers' side


def _worker_plugin(name):
    from distributed import get_worker

    return get_worker().plugins[name]


def _score_partition(plugin_name, index, files):
    plugin = _worker_plugin(plugin_name)
    X, readable, unreadable = read_images(plugin.model, files)
    with plugin.lock:
        scores = score_images(plugin.model, X)
    return index, np.asarray(plugin.model.classes_), readable, unreadable, scores


def _shift_test_files(plugin_name, files, options):
    from skxray.ood import shift_test

    plugin = _worker_plugin(plugin_name)
    X, _, unreadable = read_images(plugin.model, files)
    if unreadable:
        file, reason = unreadable[0]
        raise OSError(f"{file} could be read for the predictions but not for the shift test: {reason}")
    with plugin.lock:
        return shift_test(plugin.model, X, **options)


# --------------------------------------------------------------------------
# The client's side


def _parse_local(scheduler):
    """The worker count of ``"local"`` / ``"local:N"`` (None: one per core); ``False`` otherwise."""
    if scheduler == "local":
        return None
    if not scheduler.startswith("local:"):
        return False
    count = scheduler[len("local:"):]
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"scheduler {scheduler!r}: 'local:N' needs a worker count N >= 1")
    return int(count)


def _connect(scheduler):
    """``(client, owned)``: a Client for ``scheduler``; ``owned`` lists what to close afterwards."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ImportError(
            "prediction on Dask needs the 'dask' extra: pip install 'skxray[dask]'"
        ) from exc

    if isinstance(scheduler, Client):
        return scheduler, []
    if not isinstance(scheduler, str) or not scheduler:
        raise TypeError(
            f"scheduler must be an address, 'local:N' or a distributed.Client; got {scheduler!r}"
        )
    n_workers = _parse_local(scheduler)
    if n_workers is False:
        try:
            client = Client(scheduler)
        except OSError as exc:
            raise OSError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from exc
        return client, [client]
    # One thread per worker: two would only queue behind the model's lock.
    # Quiet logs: a failed task reaches the caller as its exception, and the
    # workers' messages while the cluster closes (heartbeats to a scheduler
    # already gone) would only clutter the command's standard error.
    cluster = LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
        silence_logs=logging.CRITICAL,
    )
    client = Client(cluster)
    return client, [client, cluster]


class DaskPredictor:
    """Score image files with a saved skxray model on a Dask cluster.

    Use it as a context manager: entering connects to the scheduler (or
    starts a local cluster) and has every worker load the model once;
    leaving unloads it and closes what was started.

    Parameters
    ----------
    model_dir : str or path-like
        Folder of a model saved with ``estimator.save`` (or ``skxray
        train``). Every worker reads it at this absolute path, so on a
        cluster of several machines it must be on a shared file system.
    scheduler : str or distributed.Client
        ``"tcp://host:8786"`` (the address of a running ``dask scheduler``),
        ``"local:N"`` to start a :class:`distributed.LocalCluster` of ``N``
        single-threaded worker processes for the duration (``"local"``: one
        per core), or a connected :class:`distributed.Client`, which is
        left open.
    partition_size : int or None, default=None
        Files per partition (one task each). None: about four partitions
        per worker, at most :data:`MAX_PARTITION_SIZE` files each.

    Attributes
    ----------
    client_ : distributed.Client
        The client, once entered.

    See Also
    --------
    predict_files : The same in one call.

    Notes
    -----
    The image paths are sent as they are given and read by the workers, so
    they must name the same files on every worker: use absolute paths on a
    shared file system for a cluster of several machines. Workers score on
    the CPU (:func:`skxray.models.load` loads there).

    Examples
    --------
    >>> from skxray.dask import DaskPredictor
    >>> with DaskPredictor("models/cnn", "local:2") as predictor:  # doctest: +SKIP
    ...     predictions = predictor.predict(["a.png", "b.png"])
    ...     predictions.proba, predictions.unreadable
    """

    def __init__(self, model_dir, scheduler, *, partition_size=None):
        self.model_dir = model_dir
        self.scheduler = scheduler
        self.partition_size = partition_size

    def __enter__(self):
        path = Path(self.model_dir)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{str(path)!r} is not a saved skxray model (no config.json)")
        if self.partition_size is not None and (
            isinstance(self.partition_size, bool) or not isinstance(self.partition_size, int)
            or self.partition_size < 1
        ):
            raise ValueError(f"partition_size must be an int >= 1 or None; got {self.partition_size!r}")
        self.client_, self._owned = _connect(self.scheduler)
        self._plugin_name = f"skxray-model-{uuid.uuid4().hex}"
        try:
            from skxray._dask_plugin import ModelPlugin

            self.client_.register_plugin(ModelPlugin(path.resolve()), name=self._plugin_name)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info):
        try:
            self.client_.unregister_worker_plugin(self._plugin_name)
        except Exception:  # noqa: BLE001 - the cluster may be gone, or never got the plugin
            pass
        self._close_owned()

    def _close_owned(self):
        for thing in self._owned:
            thing.close()
        self._owned = []

    def _partition_size(self, n_files):
        if self.partition_size is not None:
            return self.partition_size
        n_workers = max(1, len(self.client_.scheduler_info()["workers"]))
        return max(1, min(MAX_PARTITION_SIZE, math.ceil(n_files / (_PARTITIONS_PER_WORKER * n_workers))))

    def predict(self, files):
        """Score the files on the workers, one task per partition.

        Parameters
        ----------
        files : sequence of str or path-like
            Image files (at least one). A file that cannot be read is
            reported in ``unreadable``; the others are still scored.

        Returns
        -------
        predictions : FilePredictions
            The readable files in the order given, with their scores.
        """
        from distributed import as_completed

        files = [str(f) for f in files]
        if not files:
            raise ValueError("files is empty: give at least one image file")
        size = self._partition_size(len(files))
        partitions = [files[start:start + size] for start in range(0, len(files), size)]
        # Named keys say in the dashboard and task stream which partition a task is.
        token = uuid.uuid4().hex[:12]
        futures = [
            self.client_.submit(
                _score_partition, self._plugin_name, index, part, key=f"skxray-predict-{token}-{index}"
            )
            for index, part in enumerate(partitions)
        ]
        parts = []
        # Collected as they finish, so that each result leaves the cluster's
        # memory at once; _assemble puts them back in input order.
        for future in as_completed(futures):
            parts.append(future.result())
            future.release()
        return _assemble(parts, len(partitions), size)

    def shift_test(self, files, *, alpha=0.05, n_permutations=1000, random_state=0, exclude_patient_pairs=False):
        """:func:`skxray.ood.shift_test` of the images of ``files``, run on one worker.

        Up to :data:`SHIFT_TEST_MAX_IMAGES` files, the worker tests exactly
        these images, as the one-process path does. Above, it tests a random
        2,000 of them, drawn here with ``random_state``:
        ``skxray.ood.shift_test`` also compares a random 2,000 of a larger
        batch, but not the same draw, so the p-value can differ a little.

        Parameters
        ----------
        files : sequence of str
            Readable image files (e.g. ``predictions.files``).
        alpha, n_permutations, random_state, exclude_patient_pairs
            As in :func:`skxray.ood.shift_test`.

        Returns
        -------
        result : skxray.ood.ShiftTestResult
        """
        files = [str(f) for f in files]
        if len(files) > SHIFT_TEST_MAX_IMAGES:
            rng = np.random.RandomState(random_state)
            chosen = np.sort(rng.choice(len(files), SHIFT_TEST_MAX_IMAGES, replace=False))
            files = [files[i] for i in chosen]
        options = dict(alpha=alpha, n_permutations=n_permutations, random_state=random_state,
                       exclude_patient_pairs=exclude_patient_pairs)
        future = self.client_.submit(_shift_test_files, self._plugin_name, files, options, pure=False)
        return future.result()

    def external_validation(self, predictions, y, *, alpha=0.05, n_permutations=1000, random_state=0,
                            exclude_patient_pairs=False):
        """:func:`skxray.evaluation.external_validation` from predictions made on the cluster.

        Parameters
        ----------
        predictions : FilePredictions
            From :meth:`predict`, with at least one readable file.
        y : array-like of shape (len(predictions.files),)
            True labels of ``predictions.files``.
        alpha, n_permutations, random_state, exclude_patient_pairs
            Of the shift test, as in :func:`skxray.evaluation.external_validation`.

        Returns
        -------
        result : dict
            As :func:`skxray.evaluation.external_validation` returns; its
            shift test is :meth:`shift_test` on ``predictions.files``.
        """
        from skxray.evaluation import external_validation_from_predictions

        classes = np.asarray(predictions.classes)
        return external_validation_from_predictions(
            y,
            classes[np.argmax(predictions.proba, axis=1)],
            predictions.proba,
            classes=classes,
            answers=predictions.answers,
            reasons=predictions.reasons,
            shift_test=lambda: self.shift_test(
                predictions.files, alpha=alpha, n_permutations=n_permutations, random_state=random_state,
                exclude_patient_pairs=exclude_patient_pairs,
            ),
        )


def predict_files(model_dir, files, scheduler, *, partition_size=None):
    """Score image files with a saved model on a Dask cluster, in one call.

    Parameters
    ----------
    model_dir : str or path-like
        Folder of a saved skxray model, readable by every worker.
    files : sequence of str or path-like
        Image files, readable by every worker.
    scheduler : str or distributed.Client
        As in :class:`DaskPredictor`: an address, ``"local:N"`` or a client.
    partition_size : int or None, default=None
        As in :class:`DaskPredictor`.

    Returns
    -------
    predictions : FilePredictions
        The readable files in the order given, their scores, and the
        unreadable files with their reasons.

    Examples
    --------
    >>> from skxray.dask import predict_files
    >>> predictions = predict_files("models/cnn", ["a.png", "b.png"], "local:2")  # doctest: +SKIP
    """
    with DaskPredictor(model_dir, scheduler, partition_size=partition_size) as predictor:
        return predictor.predict(files)

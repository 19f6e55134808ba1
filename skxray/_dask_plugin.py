"""The worker plugin of :mod:`skxray.dask`, apart so that importing skxray.dask stays cheap.

Importing this module imports ``distributed`` (the ``dask`` extra); only
:class:`skxray.dask.DaskPredictor` does, when it connects.
"""

import threading

from distributed import WorkerPlugin

__all__ = ["ModelPlugin"]


class ModelPlugin(WorkerPlugin):
    """Loads a saved skxray model once on each worker, when the worker joins or the plugin is registered.

    Only the folder's path is pickled to the workers; each worker reads it
    with :func:`skxray.models.load`. The lock lets a worker with several
    threads read images in parallel but run the network on one partition at
    a time.

    Parameters
    ----------
    model_dir : str
        Folder of the saved model, as every worker sees it.
    """

    def __init__(self, model_dir):
        self.model_dir = str(model_dir)
        self.model = None

    def setup(self, worker):
        # Looked up at call time, not imported at module level, so that a
        # test can count the loads on each worker.
        from skxray import models

        self.model = models.load(self.model_dir)
        self.lock = threading.Lock()

    def teardown(self, worker):
        self.model = None

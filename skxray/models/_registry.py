"""The skxray classifier classes by name: for loading saved models and building one by name.

A leaf module: ``BaseImageClassifier`` adds each classifier class defined in
``skxray.models`` here when the class is created, so code that rebuilds a
model from its saved class name (``models/_persistence.py``) can find the
class without importing the models package back (an import cycle).
:func:`make_classifier` builds one by its short name (``"cnn"``), the name
the workflows (:mod:`skxray.workflows`) and the ``skxray`` command take.
"""

__all__ = ["CLASSIFIERS", "SHORT_NAMES", "all_classifiers", "classifier_names", "make_classifier"]

#: Class name -> class, filled as the classifier modules are imported.
CLASSIFIERS = {}

#: Short name -> class name of the classifiers that are built by name (the
#: ``--model`` choices). ``PretrainedCXRClassifier`` has none: it needs the
#: ``xrv`` extra and a weights file, so it is built in Python only.
SHORT_NAMES = {"cnn": "CNNClassifier", "fnn": "FNNClassifier", "resnet50": "ResNet50Classifier"}


def all_classifiers():
    """Every skxray classifier class, as scikit-learn's ``all_estimators`` lists its estimators.

    Returns
    -------
    classifiers : list of (str, type)
        ``(class name, class)`` pairs of every classifier of
        :mod:`skxray.models`, sorted by name: ``CNNClassifier``,
        ``FNNClassifier``, ``PretrainedCXRClassifier`` (listed even without
        the ``xrv`` extra it needs to fit) and ``ResNet50Classifier``.

    See Also
    --------
    classifier_names : The short names :func:`make_classifier` builds by.

    Examples
    --------
    >>> from skxray.models import all_classifiers
    >>> [name for name, _ in all_classifiers()]
    ['CNNClassifier', 'FNNClassifier', 'PretrainedCXRClassifier', 'ResNet50Classifier']
    >>> dict(all_classifiers())["CNNClassifier"]
    <class 'skxray.models.cnn.CNNClassifier'>
    """
    # Importing this module imports the skxray.models package first, whose
    # classes fill the registry as they are defined.
    return sorted(CLASSIFIERS.items())


def classifier_names():
    """The short names :func:`make_classifier` takes, in a stable order.

    Returns
    -------
    names : tuple of str
        ``("cnn", "fnn", "resnet50")``: ``CNNClassifier``, ``FNNClassifier``
        and ``ResNet50Classifier``.

    Examples
    --------
    >>> from skxray.models import classifier_names
    >>> classifier_names()
    ('cnn', 'fnn', 'resnet50')
    """
    return tuple(SHORT_NAMES)


def make_classifier(name, *, preset=None, **params):
    """An unfitted skxray classifier by its short name.

    Parameters
    ----------
    name : {"cnn", "fnn", "resnet50"}
        One of :func:`classifier_names`.
    preset : str or None, default=None
        Build it with the class's ``from_preset(preset, **params)`` (only
        ``CNNClassifier`` has presets, :data:`~skxray.models.CNN_PRESETS`).
    **params
        Constructor parameters; unset ones keep the class's (or the
        preset's) defaults.

    Returns
    -------
    clf : BaseImageClassifier
        The classifier, e.g. ``CNNClassifier(**params)``.

    Raises
    ------
    ValueError
        If ``name`` is not one of :func:`classifier_names`, or ``preset`` is
        given for a class without presets.
    TypeError
        If ``params`` name a parameter the class does not take.

    Examples
    --------
    >>> from skxray.models import make_classifier
    >>> make_classifier("fnn", max_epochs=3).max_epochs
    3
    >>> make_classifier("cnn", preset="benchmark").lr_schedule
    'onecycle'
    """
    if name not in SHORT_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(SHORT_NAMES)}")
    cls = CLASSIFIERS[SHORT_NAMES[name]]
    if preset is None:
        return cls(**params)
    if not hasattr(cls, "from_preset"):
        raise ValueError(f"preset={preset!r}: {cls.__name__} ({name!r}) has no presets; only cnn has")
    return cls.from_preset(preset, **params)

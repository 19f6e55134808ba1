"""Crash-safe checkpoints and ``fit(..., resume=True)``.

The crash tests run training in a subprocess and kill it with SIGKILL, once
from outside after some epochs and once from inside while it is writing a
checkpoint; the resumed model must equal a run that was never interrupted.
"""

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import _helpers
import numpy as np
import pytest
import torch

from skxray.datasets import make_phantom_cxr
from skxray.models import CNNClassifier, FNNClassifier, ResNet50Classifier
from skxray.models._resume import STATE_FILE, atomic_write, read_state

MAX_EPOCHS = 8

# One training script for the three kinds of run: uninterrupted, killed, resumed.
CHILD = textwrap.dedent(
    """
    import io, os, signal, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from skxray import CNNClassifier, make_phantom_cxr
    from skxray.augmentation import Compose, RandomFlip, RandomRotation

    checkpoint_dir, out, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "resume"
    die_at = int(os.environ.get("DIE_WRITING_EPOCH", "0"))
    if die_at:
        # Simulate a kill in the middle of writing last.pt: half the bytes
        # reach the file, then the process dies without any clean-up.
        real_save = torch.save

        def dying_save(obj, f, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("epoch") == die_at and "fingerprint" in obj:
                buf = io.BytesIO()
                real_save(obj, buf)
                with open(f, "wb") as fh:
                    fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                    fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)

        torch.save = dying_save
    X, y = make_phantom_cxr(200, image_size=32, random_state=0)
    clf = CNNClassifier(
        filters=(8, 16), max_epochs={max_epochs}, batch_size=16, lr=3e-3, dropout=0.3,
        augment=Compose([RandomFlip(), RandomRotation(10)]), lr_schedule="cosine",
        checkpoint_dir=checkpoint_dir, random_state=0, ood=False, verbose=int(resume),
    )
    clf.fit(X, y, resume=resume)
    params = torch.cat([p.detach().flatten() for p in clf.module_.parameters()]).numpy()
    np.savez(out, proba=clf.predict_proba(X), params=params,
             epochs=[h["epoch"] for h in clf.history_], lr=[h["lr"] for h in clf.history_])
    """
).format(max_epochs=MAX_EPOCHS)


def _start(script, checkpoint_dir, out, mode, **env):
    return subprocess.Popen(
        [sys.executable, str(script), str(checkpoint_dir), str(out), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )


def _run(script, checkpoint_dir, out, mode, **env):
    proc = _start(script, checkpoint_dir, out, mode, **env)
    output, _ = proc.communicate(timeout=600)
    return proc.returncode, output


def _saved_epoch(checkpoint_dir):
    files = list(Path(checkpoint_dir).glob(f"*/{STATE_FILE}"))
    return int(read_state(files[0])["epoch"]) if files else 0


@pytest.fixture(scope="module")
def child_script(tmp_path_factory):
    script = tmp_path_factory.mktemp("child") / "train.py"
    script.write_text(CHILD)
    return script


@pytest.fixture(scope="module")
def uninterrupted(child_script, tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    rc, output = _run(child_script, folder / "ckpt", folder / "out.npz", "fresh")
    assert rc == 0, output
    return np.load(folder / "out.npz")


def _assert_same_model(resumed, reference):
    np.testing.assert_array_equal(resumed["epochs"], np.arange(1, MAX_EPOCHS + 1))
    np.testing.assert_allclose(resumed["lr"], reference["lr"], rtol=1e-6)
    np.testing.assert_allclose(resumed["params"], reference["params"], atol=1e-5)
    np.testing.assert_allclose(resumed["proba"], reference["proba"], atol=1e-5)


def test_sigkill_after_some_epochs_then_resume_equals_uninterrupted(child_script, uninterrupted, tmp_path):
    ckpt = tmp_path / "ckpt"
    proc = _start(child_script, ckpt, tmp_path / "killed.npz", "resume")
    deadline = time.monotonic() + 300
    while _saved_epoch(ckpt) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    done = _saved_epoch(ckpt)
    assert 2 <= done < MAX_EPOCHS, f"the kill landed after epoch {done}"
    assert not (tmp_path / "killed.npz").exists()

    rc, output = _run(child_script, ckpt, tmp_path / "resumed.npz", "resume")
    assert rc == 0, output
    # The epoch count continues from the checkpoint instead of starting over.
    assert f"after epoch {done}: {MAX_EPOCHS - done} epoch(s) to go" in output
    _assert_same_model(np.load(tmp_path / "resumed.npz"), uninterrupted)


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(child_script, uninterrupted, tmp_path):
    ckpt = tmp_path / "ckpt"
    rc, output = _run(child_script, ckpt, tmp_path / "killed.npz", "resume", DIE_WRITING_EPOCH="4")
    assert rc == -signal.SIGKILL, output
    (folder,) = list(ckpt.iterdir())
    leftovers = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1  # the half-written file, never renamed into place
    assert read_state(folder / STATE_FILE)["epoch"] == 3

    rc, output = _run(child_script, ckpt, tmp_path / "resumed.npz", "resume")
    assert rc == 0, output
    assert f"after epoch 3: {MAX_EPOCHS - 3} epoch(s) to go" in output
    _assert_same_model(np.load(tmp_path / "resumed.npz"), uninterrupted)


# ------------------------------------------------------------------ in process
@pytest.fixture(scope="module")
def phantoms():
    return make_phantom_cxr(120, image_size=24, random_state=3)


def _fnn(tmp_path, **kw):
    params = dict(hidden_layer_sizes=(16,), max_epochs=6, random_state=0, checkpoint_dir=tmp_path, ood=False)
    return FNNClassifier(**{**params, **kw})


#: Ctrl-C after some epochs (skorch ends the fit early, as for a real one).
_interrupt_after_epoch = _helpers.interrupt_after_epoch


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda d: _fnn(d, lr_schedule="plateau", early_stopping=True, n_iter_no_change=2), id="fnn"),
        # mixup draws from torch's generator, which the checkpoint saves.
        pytest.param(lambda d: _fnn(d, mixup=0.4), id="fnn-mixup"),
        pytest.param(
            lambda d: ResNet50Classifier(
                weights=None, head_units=8, max_epochs=4, random_state=0, checkpoint_dir=d, ood=False
            ),
            id="resnet-cached",
        ),
    ],
)
def test_resume_after_interrupt_equals_uninterrupted(make, phantoms, tmp_path, monkeypatch):
    X, y = phantoms
    reference = make(tmp_path / "a").fit(X, y)
    with monkeypatch.context() as patch:
        _interrupt_after_epoch(patch, 2)
        stopped = make(tmp_path / "b").fit(X, y)
    assert stopped.n_iter_ == 2
    resumed = make(tmp_path / "b").fit(X, y, resume=True)
    assert resumed.resumed_from_ == str(Path(stopped.checkpoint_path_) / STATE_FILE)
    assert [h["epoch"] for h in resumed.history_] == [h["epoch"] for h in reference.history_]
    # The two first epochs come from the checkpoint, not from training again.
    assert [h["dur"] for h in resumed.history_[:2]] == [h["dur"] for h in stopped.history_]
    np.testing.assert_allclose(resumed.predict_proba(X), reference.predict_proba(X), atol=1e-5)


def test_resume_of_finished_fit_trains_nothing(phantoms, tmp_path):
    X, y = phantoms
    first = _fnn(tmp_path, lr=0.05, early_stopping=True, n_iter_no_change=1, max_epochs=30).fit(X, y)
    again = _fnn(tmp_path, lr=0.05, early_stopping=True, n_iter_no_change=1, max_epochs=30).fit(
        X, y, resume=True
    )
    assert first.n_iter_ < 30  # early stopping ended it
    assert again.history_ == first.history_
    np.testing.assert_array_equal(again.predict_proba(X), first.predict_proba(X))


def test_resume_true_without_checkpoint_starts_afresh(phantoms, tmp_path):
    X, y = phantoms
    clf = _fnn(tmp_path).fit(X, y, resume=True)
    assert clf.resumed_from_ is None
    assert clf.n_iter_ == 6
    assert (Path(clf.checkpoint_path_) / STATE_FILE).is_file()


def test_resume_true_skips_checkpoints_of_other_settings(phantoms, tmp_path):
    X, y = phantoms
    _fnn(tmp_path, lr=0.01).fit(X, y)
    clf = _fnn(tmp_path).fit(X, y, resume=True)
    assert clf.resumed_from_ is None
    # Other data: no match either.
    assert _fnn(tmp_path).fit(X[:-1], y[:-1], resume=True).resumed_from_ is None
    # Settings that do not change training do not prevent resumption.
    assert _fnn(tmp_path, verbose=0, device="cpu").fit(X, y, resume=True).resumed_from_ is not None


def test_resume_from_mismatching_path_says_what_differs(phantoms, tmp_path):
    X, y = phantoms
    first = _fnn(tmp_path, lr=0.01).fit(X, y)
    with pytest.raises(ValueError, match=r"cannot resume from .*lr=0.01 in the checkpoint vs lr=0.001 now"):
        _fnn(tmp_path, lr=0.001).fit(X, y, resume=first.checkpoint_path_)
    with pytest.raises(ValueError, match="training images or labels differ"):
        _fnn(tmp_path, lr=0.01).fit(X, y[::-1], resume=first.checkpoint_path_)


def test_resume_needs_checkpoint_dir(phantoms):
    X, y = phantoms
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        FNNClassifier(max_epochs=1).fit(X, y, resume=True)


def test_resume_from_missing_path(phantoms, tmp_path):
    X, y = phantoms
    with pytest.raises(ValueError, match=r"resume='.*nowhere' is neither a checkpoint file nor a folder"):
        _fnn(tmp_path).fit(X, y, resume=str(tmp_path / "nowhere"))


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = None


def test_pickle_payload_as_checkpoint_is_refused_not_run(phantoms, tmp_path):
    global MARKER
    X, y = phantoms
    MARKER = tmp_path / "pwned"
    folder = tmp_path / "FNNClassifier-evil"
    folder.mkdir()
    torch.save({"format": 1, "payload": _Payload()}, folder / STATE_FILE)
    with pytest.raises(ValueError, match=r"Cannot read the training checkpoint '.*last.pt'"):
        _fnn(tmp_path).fit(X, y, resume=folder)
    # resume=True passes over the unreadable file and starts afresh.
    assert _fnn(tmp_path).fit(X, y, resume=True).resumed_from_ is None
    assert not MARKER.exists()


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "state.bin"
    target.write_bytes(b"old")

    def failing(tmp):
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"new"))
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]


def test_checkpoint_folder_holds_complete_files_only(phantoms, tmp_path):
    X, y = phantoms
    clf = CNNClassifier(filters=(4,), dense_units=8, max_epochs=2, random_state=0, checkpoint_dir=tmp_path).fit(X, y)
    names = sorted(p.name for p in Path(clf.checkpoint_path_).iterdir())
    assert names == ["history.json", STATE_FILE, "optimizer.pt", "params.pt"]
    torch.load(Path(clf.checkpoint_path_) / "params.pt", weights_only=True)
    assert read_state(Path(clf.checkpoint_path_) / STATE_FILE)["finished"]


def test_fitted_estimator_with_checkpoints_still_pickles(phantoms, tmp_path):
    X, y = phantoms
    clf = _fnn(tmp_path, max_epochs=2).fit(X, y)
    clone = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone.predict_proba(X), clf.predict_proba(X))

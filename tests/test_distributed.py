"""Data-parallel training on 2 CPU processes (gloo) through skorch's AccelerateMixin.

Each test launches ``torchrun --standalone --nproc_per_node 2`` on a small
training script (a free rendezvous port, so no fixed port is needed); every
process writes what it saw to ``rank<N>.json``, and the assertions compare
the two processes with each other and with a single-process run of the same
script. The script uses the estimator exactly as a single-process user
would: ``accelerator="auto"`` (the default) sees ``WORLD_SIZE=2``.

What would make these tests fail:

- a process training alone on all the data (``num_processes`` 1, or each
  process seeing every training image per epoch);
- processes that disagree on the validation loss, and so stop at different
  epochs (with skorch's plain ``History`` one process stops and the other
  waits forever: the launch then times out and the test fails);
- any file or folder under ``checkpoint_dir`` created by the second process
  (recorded with a Python audit hook on ``open``, ``os.rename``/``os.replace``
  and ``os.mkdir``);
- a resumed 2-process fit that does not end where an uninterrupted one does.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("accelerate", reason="data-parallel training needs the 'distributed' extra")

import skxray  # noqa: E402
from skxray.datasets import make_phantom_cxr  # noqa: E402
from skxray.models import FNNClassifier  # noqa: E402

pytestmark = pytest.mark.slow

#: Images per process and step; one process gets twice as many, so that the
#: two runs take optimisation steps of the same size.
BATCH = 8
MAX_EPOCHS = 60
#: Held-out accuracy of the 2-process model vs the single-process one, in
#: absolute terms, on 200 held-out phantoms (one image is 0.005).
ACCURACY_TOLERANCE = 0.03

CHILD = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    from skxray.datasets import make_phantom_cxr
    from skxray.models import FNNClassifier, fnn
    from skxray.models._resume import TrainingState

    out, checkpoint_dir, batch_size, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    rank = int(os.environ.get("RANK", "0"))
    root = os.path.realpath(checkpoint_dir)

    # Every file or folder this process creates or renames under checkpoint_dir.
    written = []
    def audit(event, args):
        if event == "open" and args[1] is not None and any(c in str(args[1]) for c in "wax+"):
            paths = [args[0]]
        elif event in ("os.rename", "os.mkdir"):
            paths = list(args[:2]) if event == "os.rename" else [args[0]]
        else:
            return
        for p in paths:
            if isinstance(p, (str, bytes, os.PathLike)):
                p = os.path.realpath(os.fsdecode(p))
                if p.startswith(root):
                    written.append(p)
    sys.addaudithook(audit)

    # Images the network trained on in this process, per epoch.
    seen = []
    forward = fnn._MLP.forward
    def counting_forward(self, x):
        if self.training:
            seen[-1] += int(x.shape[0])
        return forward(self, x)
    fnn._MLP.forward = counting_forward
    on_epoch_end = TrainingState.on_epoch_end
    stop_after = int(os.environ.get("STOP_AFTER_EPOCH", "0"))
    def epoch_end(self, net, **kwargs):
        on_epoch_end(self, net, **kwargs)
        seen.append(0)
        if len(net.history) == stop_after:
            raise KeyboardInterrupt  # an interruption, on every process alike
    TrainingState.on_epoch_end = epoch_end
    seen.append(0)

    X, y = make_phantom_cxr(240, image_size=16, random_state=0)
    Xt, yt = make_phantom_cxr(200, image_size=16, random_state=1)
    clf = FNNClassifier(
        hidden_layer_sizes=(16,), max_epochs={max_epochs}, batch_size=batch_size, lr=1e-2,
        early_stopping=True, n_iter_no_change=3, random_state=0, checkpoint_dir=checkpoint_dir,
    )
    clf.fit(X, y, resume=mode == "resume")
    result = dict(
        rank=rank,
        num_processes=torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        n_iter=clf.n_iter_,
        valid_loss=[h["valid_loss"] for h in clf.history_],
        accuracy=clf.score(Xt, yt),
        params=torch.cat([p.detach().flatten() for p in clf.module_.parameters()]).tolist(),
        seen=seen[: clf.n_iter_],
        checkpoint_path=clf.checkpoint_path_,
        resumed_from=clf.resumed_from_,
        written=sorted(set(written)),
        has_ood=clf.ood_ is not None,
    )
    if mode == "fresh":
        # The quickstart's pattern: a pipeline cross-validated with clones of
        # the estimator, each fit with early stopping, unchanged.
        pipe = make_pipeline(
            FunctionTransformer(),
            FNNClassifier(hidden_layer_sizes=(8,), max_epochs=20, batch_size=batch_size,
                          early_stopping=True, n_iter_no_change=2, random_state=0, ood=False),
        )
        result["cv_scores"] = cross_val_score(pipe, X, y, cv=2).tolist()
        # Learning-rate schedules, per epoch and per batch of this process.
        for schedule in ("cosine", "onecycle"):
            scheduled = FNNClassifier(hidden_layer_sizes=(8,), max_epochs=4, batch_size=batch_size,
                                      lr_schedule=schedule, random_state=0, ood=False).fit(X, y)
            result[f"{{schedule}}_lr"] = [h["lr"] for h in scheduled.history_]
    with open(os.path.join(out, f"rank{{rank}}.json"), "w") as f:
        json.dump(result, f)
    """
).format(max_epochs=MAX_EPOCHS)


@pytest.fixture(scope="module")
def child_script(tmp_path_factory):
    script = tmp_path_factory.mktemp("ddp") / "train.py"
    script.write_text(CHILD)
    return script


def _launch(script, out, checkpoint_dir, *, processes, mode="fresh", **env):
    """Run the script on ``processes`` processes; return each process's JSON."""
    out.mkdir(parents=True, exist_ok=True)
    batch = BATCH if processes > 1 else BATCH * 2
    args = [str(script), str(out), str(checkpoint_dir), str(batch), mode]
    if processes > 1:
        torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
        assert torchrun, "torchrun (installed with torch) was not found next to the Python"
        cmd = [torchrun, "--standalone", f"--nproc_per_node={processes}", *args]
    else:
        cmd = [sys.executable, *args]
    clean = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    # The processes import the skxray under test, wherever the script lies.
    source = os.path.dirname(os.path.dirname(skxray.__file__))
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [source, clean.get("PYTHONPATH")]))
    # Its own process group, so that a hang (processes waiting for each other
    # forever) ends, after the time limit, with every process killed and a failure.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**clean, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **env},
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the {processes} processes did not finish in 600 s (a hang?):\n{stderr[-3000:]}")
    assert proc.returncode == 0, stdout[-3000:] + stderr[-5000:]
    runs = [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]
    return runs


@pytest.fixture(scope="module")
def single(child_script, tmp_path_factory):
    folder = tmp_path_factory.mktemp("single")
    return _launch(child_script, folder / "out", folder / "ckpt", processes=1)[0]


@pytest.fixture(scope="module")
def pair(child_script, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    return _launch(child_script, folder / "out", folder / "ckpt", processes=2)


def test_two_processes_share_the_data(pair, single):
    for run in pair:
        assert run["num_processes"] == 2
        # Each process trains on its half of the training images each epoch
        # (accelerate pads the last batch, so a few more than half).
        n_train = single["seen"][0]
        assert all(n_train / 2 <= s <= n_train / 2 + BATCH for s in run["seen"]), run["seen"]
    assert single["num_processes"] == 1


def test_processes_hold_one_model_and_stop_together(pair):
    first, second = pair
    # Early stopping did stop training, at the same epoch in both processes,
    # because they agree on every epoch's validation loss.
    assert first["n_iter"] == second["n_iter"] < MAX_EPOCHS
    np.testing.assert_allclose(first["valid_loss"], second["valid_loss"], rtol=1e-6)
    np.testing.assert_allclose(first["params"], second["params"], atol=1e-6)
    assert first["accuracy"] == second["accuracy"]
    assert first["has_ood"] and second["has_ood"]
    # Cloned estimators in cross-validation also train together and agree.
    assert first["cv_scores"] == second["cv_scores"]


def test_schedules_follow_epochs_not_processes(pair, single):
    # The same learning rate at every epoch in 1 and 2 processes, for a
    # per-epoch (cosine) and a per-batch schedule (one-cycle: each process
    # steps it once per batch of its own, half as many, so its length must
    # be counted in those; counted in all batches it would end half-way).
    for schedule in ("cosine", "onecycle"):
        rates = pair[0][f"{schedule}_lr"]
        assert rates[1] != rates[0]
        np.testing.assert_allclose(rates, single[f"{schedule}_lr"], rtol=1e-6)
        assert pair[1][f"{schedule}_lr"] == rates


def test_two_processes_reach_the_single_process_accuracy(pair, single):
    print(
        f"\nheld-out accuracy: 1 process {single['accuracy']:.3f} ({single['n_iter']} epochs), "
        f"2 processes {pair[0]['accuracy']:.3f} ({pair[0]['n_iter']} epochs); "
        f"tolerance {ACCURACY_TOLERANCE}"
    )
    assert abs(pair[0]["accuracy"] - single["accuracy"]) <= ACCURACY_TOLERANCE


def test_only_the_main_process_writes_checkpoints(pair):
    first, second = pair
    assert first["checkpoint_path"] == second["checkpoint_path"]
    folder = first["checkpoint_path"]
    names = {os.path.basename(p) for p in first["written"]}
    assert {"last.pt", "params.pt", "history.json"} <= names, names
    assert second["written"] == []
    assert sorted(os.listdir(folder)) == ["history.json", "last.pt", "optimizer.pt", "params.pt"]


def test_resume_in_two_processes_equals_uninterrupted(child_script, pair, tmp_path):
    ckpt = tmp_path / "ckpt"
    stopped = _launch(child_script, tmp_path / "a", ckpt, processes=2, STOP_AFTER_EPOCH="2")
    assert [run["n_iter"] for run in stopped] == [2, 2]
    resumed = _launch(child_script, tmp_path / "b", ckpt, processes=2, mode="resume")
    for run in resumed:
        assert run["resumed_from"] == os.path.join(stopped[0]["checkpoint_path"], "last.pt")
        assert run["n_iter"] == pair[0]["n_iter"]
        np.testing.assert_allclose(run["valid_loss"], pair[0]["valid_loss"], rtol=1e-5)
        np.testing.assert_allclose(run["params"], pair[0]["params"], atol=1e-5)
    assert resumed[1]["written"] == []

    # The checkpoint of 2 processes is not continued by 1 (another course of training).
    X, y = make_phantom_cxr(240, image_size=16, random_state=0)
    clf = FNNClassifier(
        hidden_layer_sizes=(16,), max_epochs=MAX_EPOCHS, batch_size=BATCH, lr=1e-2,
        early_stopping=True, n_iter_no_change=3, random_state=0, checkpoint_dir=ckpt,
    )
    with pytest.raises(ValueError, match="num_processes 2 in the checkpoint vs 1 now"):
        clf.fit(X, y, resume=stopped[0]["checkpoint_path"])


def test_only_the_main_process_saves_a_model(tmp_path, monkeypatch):
    import skxray.models._base as base

    X, y = make_phantom_cxr(40, image_size=16, random_state=0)
    clf = FNNClassifier(hidden_layer_sizes=(8,), max_epochs=1, random_state=0, ood=False).fit(X, y)
    monkeypatch.setattr(base, "is_secondary_process", lambda: True)
    assert clf.save(tmp_path / "model") == tmp_path / "model"
    assert not (tmp_path / "model").exists()
    monkeypatch.setattr(base, "is_secondary_process", lambda: False)
    clf.save(tmp_path / "model")
    assert (tmp_path / "model" / "config.json").is_file()

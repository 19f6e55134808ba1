"""The logic of ``benchmarks/speed.py``'s ``profile`` section: which op group
each profiler event counts in, that the shares add up, and that the profile's
FLOP count of a real training step agrees with the roofline's. Nothing is
timed here; the one profiled step is a 32 px batch of 4.
"""

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def speed():
    # speed.py puts its folder on sys.path for its own imports (_common); take it off again.
    path_before = list(sys.path)
    spec = importlib.util.spec_from_file_location("speed", BENCHMARKS / "speed.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path_before
    return module


@pytest.mark.parametrize("name, group", [
    ("aten::conv2d", "convolution forward"),
    ("aten::mkldnn_convolution", "convolution forward"),
    ("aten::convolution_backward", "convolution backward"),
    ("autograd::engine::evaluate_function: ConvolutionBackward0", "convolution backward"),
    ("aten::native_batch_norm", "batch norm"),
    ("NativeBatchNormBackward0", "batch norm"),
    ("aten::relu", "activation and dropout"),
    ("aten::threshold_backward", "activation and dropout"),
    ("aten::dropout", "activation and dropout"),
    ("aten::max_pool2d_with_indices", "pooling"),
    ("MaxPool2DWithIndicesBackward0", "pooling"),
    ("aten::addmm", "linear"),
    ("AddmmBackward0", "linear"),
    ("aten::mm", "linear"),
    ("aten::binary_cross_entropy_with_logits", "loss"),
    ("BinaryCrossEntropyWithLogitsBackward0", "loss"),
    ("Optimizer.step#Adam.step", "optimizer step"),
    ("aten::copy_", "copies and casts"),
    ("aten::_to_copy", "copies and casts"),
    ("ToCopyBackward0", "copies and casts"),
    ("aten::empty", None),
    ("aten::add_", None),
    ("aten::lerp_", None),
    ("autograd::engine::evaluate_function: torch::autograd::AccumulateGrad", None),
])
def test_op_group_names_known_ops(speed, name, group):
    assert speed.op_group(name) == group


def _event(name, self_us, parent=None):
    return SimpleNamespace(name=name, self_cpu_time_total=self_us, cpu_parent=parent)


def test_unnamed_events_count_in_their_nearest_named_ancestor(speed):
    step = _event("Optimizer.step#Adam.step", 10)
    lerp = _event("aten::lerp_", 30, step)  # Adam's own arithmetic
    conv = _event("aten::convolution_backward", 100)
    empty = _event("aten::empty", 5, conv)
    copy = _event("aten::copy_", 20, conv)  # a layout conversion inside: a copy, not the convolution
    top = _event("aten::add_", 7)
    groups = [speed.event_group(e) for e in (step, lerp, conv, empty, copy, top)]
    assert groups == ["optimizer step", "optimizer step", "convolution backward", "convolution backward",
                      "copies and casts", "other"]
    seconds = speed.group_seconds([step, lerp, conv, empty, copy, top])
    assert seconds["optimizer step"] == pytest.approx(40e-6)
    assert seconds["convolution backward"] == pytest.approx(105e-6)
    shares = speed.time_shares(seconds)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["other"] == pytest.approx(7 / 172)


def test_a_profiled_training_step_is_grouped_and_counted(speed):
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    module = speed.conv_module(32)  # the estimator's CNN, NHWC
    module.train()
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    batch = (torch.rand(4, 1, 32, 32), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        speed._profile_train_steps(module, opt, [batch], None)
    events = list(prof.events())
    shares = speed.time_shares(speed.group_seconds(events))
    assert sum(shares.values()) == pytest.approx(1.0)
    for group in ("convolution forward", "convolution backward", "batch norm", "activation and dropout",
                  "pooling", "linear", "loss", "optimizer step"):
        assert shares[group] > 0, group

    layers = speed.conv_layers(events)
    assert [L["weight_shape"] for L in layers] == [[32, 1, 3, 3], [64, 32, 3, 3], [128, 64, 3, 3]]
    # The images need no gradient: autograd skips the first layer's input gradient only.
    assert [L["computes_input_grad"] for L in layers] == [False, True, True]
    assert all(L["computes_weight_grad"] for L in layers)
    from_shapes, with_flops = speed.profile_gflop(events, layers, steps=1)
    # speed.training_flops_per_image counts with FlopCounterMode at batch 32; the count is linear in it.
    assert from_shapes == pytest.approx(speed.training_flops_per_image(32, batch_size=4) * 4 / 1e9, rel=1e-6)
    assert with_flops < from_shapes  # the profiler's own count misses the padding="same" convolutions

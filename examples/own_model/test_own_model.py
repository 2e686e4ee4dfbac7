"""What a user's own test suite looks like with vgbench: one assertion per model.

The healthy twins pass `vg_inspect` (vgbench's fixture: the verdict must be healthy); the
flagged models fail it with the verdict this example expects, naming the layer. The last
test checks each verdict by training on one seed at the pairs' small budget (check.py runs
five seeds; README.md has the numbers).

    pytest examples/own_model -n auto
"""

import pytest
import torch

import twins
import vgbench

PAIRS = list(twins.PAIRS.values())
IDS = [p.name for p in PAIRS]


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_the_healthy_twin_passes(pair, vg_inspect):
    model, batch, optimizer = twins.at_init(pair.healthy, pair.task, pair.optimizer)
    report = vg_inspect(model, batch, optimizer=optimizer)
    assert report.verdict["verdict"] == "healthy"


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_the_flagged_model_fails_with_its_verdict(pair):
    model, batch, optimizer = twins.at_init(pair.flagged, pair.task, pair.optimizer)
    with pytest.raises(AssertionError, match=f"verdict {pair.verdict} from ") as failed:
        vgbench.assert_gradient_flow(model, batch, optimizer=optimizer)
    assert "\n\nparameter " in str(failed.value)  # the per-layer table follows the cause


def test_the_rnn_is_flagged_through_time_not_by_depth():
    pair = twins.PAIRS["rnn"]
    model, batch, optimizer = twins.at_init(pair.flagged, pair.task, pair.optimizer)
    report = vgbench.inspect(model, *batch, optimizer=optimizer)
    assert report.verdict["layer_name"] == "rnn"
    assert report.verdict["evidence"]["time_steps"] == twins.RECALL_STEPS
    assert report.through_time["rnn"]["ratio"] < 1e-10  # 100 tanh steps at gain ~0.6 each


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_training_agrees_with_the_verdict(pair):
    """seed 0: the flagged model stays below TRAINABLE_ACC, its twin reaches it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as check.py runs: its seed-0 numbers
    try:
        flagged = twins.train(pair.flagged, pair.task, pair.optimizer, pair.steps, seed=0)
        healthy = twins.train(pair.healthy, pair.task, pair.optimizer, pair.steps, seed=0)
    finally:
        torch.set_num_threads(threads)
    assert flagged < twins.TRAINABLE_ACC <= healthy, (
        f"{pair.flagged.__name__} reached {flagged:.3f}, {pair.healthy.__name__} "
        f"{healthy:.3f} after {pair.steps} steps (expected below / at least "
        f"{twins.TRAINABLE_ACC})")


def test_assert_trains_catches_the_stack_inspect_calls_healthy():
    """30 blocks with LayerNorm and no skips read healthy at init and do not train with
    their optimizer (README.md); a few hundred steps under vgbench.assert_trains say so,
    while the residual twin passes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as trains.py measures
    try:
        model, batch, optimizer = twins.at_init(twins.plain_30_norm, "fashion", twins.sgd)
        vgbench.assert_gradient_flow(model, batch, optimizer=optimizer)  # healthy at init
        with pytest.raises(AssertionError, match="the loss did not fall in 300 steps"):
            vgbench.assert_trains(model, twins.Task("fashion", 0).batch, steps=300,
                                  optimizer=twins.sgd)
        model, _, _ = twins.at_init(twins.residual_30, "fashion", twins.sgd)
        vgbench.assert_trains(model, twins.Task("fashion", 0).batch, steps=300,
                              optimizer=twins.sgd)
    finally:
        torch.set_num_threads(threads)

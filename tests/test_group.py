"""Runs of one network shape trained as one group (vgbench.batched): remedies that differ
only in init or learning rate, stacked, one optimizer step over all, the step captured in
one CUDA graph on a GPU. On the CPU the group is tested against each member trained alone,
its self-check against a member that trains on another member's batches, and its graph
path through a stand-in for the capture (the same contract as tests/test_selfcheck.py)."""

from dataclasses import replace

import pytest
import torch

from tests.test_selfcheck import (  # noqa: F401 (fresh_session: an autouse fixture)
    StaleBuffer, StandIn, fresh_session)
from vgbench import batched, data, registry, selfcheck, session, train

LIMIT = 2048  # 1843 training samples: 3 full batches of 512 and a short one


@pytest.fixture(scope="module")
def splits(real_data):
    return {s: data.split(real_data, s, limit=LIMIT) for s in (42, 43)}


def member(name, seed, splits, **changes):
    cfg = replace(registry.get(name).config, epochs=2, seed=seed, **changes)
    return batched.Member(cfg, splits[seed], name, registry.get(name).parts)


def trained(group: batched.BatchedRun):
    while not group.done:
        group.step()
    return group.finish()


def assert_as_alone(h, m: batched.Member):
    """A member's history against the same run trained alone: batched matrix multiplies
    round differently, so to the tolerances of tests/test_batched.py."""
    alone = train.train(m.cfg, m.splits, m.name, parts=m.parts)
    for key in ("train_loss", "val_loss", "val_acc", "train_acc"):
        torch.testing.assert_close(torch.tensor(getattr(h, key)),
                                   torch.tensor(getattr(alone, key)), rtol=1e-4, atol=1e-5)
    assert h.test_acc == pytest.approx(alone.test_acc, abs=2e-3)
    torch.testing.assert_close(torch.tensor(h.diagnostics["grad_norm"]),
                               torch.tensor(alone.diagnostics["grad_norm"]),
                               rtol=1e-3, atol=1e-9)
    def calls(d):  # the evidence's numbers differ in rounding
        return {k: (v["verdict"], v["layer"]) for k, v in d.items()}
    assert calls(h.diagnosis) == calls(alone.diagnosis)


def test_remedies_that_differ_in_init_train_as_one_group_and_each_as_alone(splits):
    members = [member("baseline", 42, splits), member("init_std1", 43, splits),
               member("xavier", 42, splits), member("orthogonal", 43, splits),
               member("dead_relu", 42, splits, activation="sigmoid")]  # its own init code
    group = batched.BatchedRun(members)
    assert group.check.ok and group.check.worst.startswith("member ")
    hs = trained(group)
    labels = ["baseline:42", "init_std1:43", "xavier:42", "orthogonal:43", "dead_relu:42"]
    for h, m in zip(hs, members):
        assert h.batched_with == labels and h.name == m.name
        assert h.config["init"] == m.cfg.init and h.config["seed"] == m.cfg.seed
        assert_as_alone(h, m)


@pytest.mark.parametrize("name, lrs", [("tanh_xavier", (0.01, 0.1, 0.03)),
                                       ("adam", (1e-3, 3e-3))])
def test_members_at_other_learning_rates_each_take_their_own_step(splits, name, lrs):
    """The optimizer steps at the largest rate, each member's step scaled to its own."""
    members = [member(name, 42 + i % 2, splits, lr=lr) for i, lr in enumerate(lrs)]
    group = batched.BatchedRun(members)
    assert group.lr_scale.tolist() == pytest.approx([lr / max(lrs) for lr in lrs])
    for h, m in zip(trained(group), members):
        assert h.config["lr"] == m.cfg.lr
        assert_as_alone(h, m)


def test_what_cannot_share_a_group_says_why(splits):
    assert batched.group_key(registry.get("baseline").config) == batched.group_key(
        registry.get("init_std10").config)
    assert batched.group_key(registry.get("tanh_xavier").config) == batched.group_key(
        registry.get("explode_tanh").config)  # lr 0.01 and 1.0
    assert batched.group_key(registry.get("baseline").config) != batched.group_key(
        registry.get("relu").config)
    assert batched.group_key(registry.get("layerwise").config) is None
    with pytest.raises(ValueError, match="differ only in seed, init, init_std, init_gain, lr"):
        batched.BatchedRun([member("baseline", 42, splits), member("relu", 42, splits)])


class SwappedMembers(batched.BatchedRun):
    """A broken group step: members 1 and 2 train on each other's batches (member 0, the
    only one the check used to compare, is right)."""

    def _gather(self, idx):
        x, y = super()._gather(idx)
        order = torch.tensor([0, 2, 1, *range(3, len(x))])
        return x[order], y[order]


def test_a_mixed_up_member_is_caught_and_named(splits):
    members = [member("baseline", 42, splits), member("xavier", 43, splits),
               member("orthogonal", 42, splits)]
    with pytest.raises(selfcheck.Mismatch, match="batched seeds differs from eager") as exc:
        SwappedMembers(members)
    assert exc.value.result.worst.startswith(("member 1: ", "member 2: "))
    assert exc.value.result.diff > 100 * selfcheck.FLOOR
    with pytest.raises(selfcheck.Mismatch):  # the rest of the session trains one by one
        batched.BatchedRun(members)


def graphed(members, graph):
    group = batched.BatchedRun(members)
    group.graphs = graph(group, what=selfcheck.GROUP_GRAPH)
    return trained(group)


@pytest.mark.parametrize("lr", [None, 0.03])
def test_the_group_step_is_replayed_after_its_check_and_trains_as_eager(splits, lr):
    def members():
        return [member("baseline", 42, splits), member("init_std1", 43, splits,
                                                        **({"lr": lr} if lr else {}))]
    hs = graphed(members(), StandIn)
    selfcheck.reset()
    eager = trained(batched.BatchedRun(members()))
    for h, e in zip(hs, eager):
        assert h.cuda_graph == "captured"
        graph = [c for c in h.self_checks if c["what"] == selfcheck.GROUP_GRAPH]
        assert len(graph) == 1 and graph[0]["ok"] and graph[0]["diff"] == 0.0
        assert graph[0]["worst"].startswith("member ")
        assert h.train_loss == e.train_loss and h.val_acc == e.val_acc  # the same ops
        assert h.diagnostics == e.diagnostics
    assert [c["here"] for c in hs[0].self_checks] == [True, True]
    assert [c["here"] for c in hs[1].self_checks] == [False, False]


def test_a_stale_group_replay_is_caught_and_the_group_trains_eagerly(splits):
    def members():
        return [member("baseline", 42, splits), member("xavier", 43, splits)]
    hs = graphed(members(), StaleBuffer)
    selfcheck.reset()
    eager = trained(batched.BatchedRun(members()))
    for h, e in zip(hs, eager):
        assert h.cuda_graph.startswith("eager (self-check failed: group cuda graph differs")
        assert h.train_loss == e.train_loss and h.val_acc == e.val_acc
    assert selfcheck.failed(selfcheck.GRAPH) is None  # a single run's graph is not blamed


def test_a_session_groups_the_remedies_of_one_shape(real_data, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "load_cached", lambda *a, **k: real_data)
    settings = session.Settings(budget="quick", epochs=1, n_seeds=2, limit=1024,
                                remedies=("baseline", "init_std1", "relu", "adam"),
                                out=str(tmp_path), figures=False, batch_seeds="on",
                                device="cpu")
    by_id = {c.id: c for c in settings.cases}
    sigmoid = ("baseline-seed42", "baseline-seed43", "init_std1-seed42", "init_std1-seed43")
    assert [c.id for c in settings.group(by_id["init_std1-seed43"])] == list(sigmoid)
    assert [c.id for c in settings.group(by_id["relu-seed42"])] == ["relu-seed42",
                                                                    "relu-seed43"]
    assert settings.group(by_id["adam-seed42"])[1].id == "adam-seed43"
    assert replace(settings, batch_seeds="auto").group(by_id["baseline-seed42"]) is None
    assert replace(settings, n_seeds=1, remedies=("relu", "adam")).group(
        session.Case("relu", 42)) is None  # nothing shares its group
    records = {c.id: session.run_case(c, settings) for c in settings.cases
               if c.id in sigmoid}
    labels = ["baseline:42", "baseline:43", "init_std1:42", "init_std1:43"]
    for case_id, r in records.items():
        assert r["batched_with"] == labels
        alone = train.train(settings.config(registry.get(r["remedy"]), r["seed"]),
                            data.split(real_data, r["seed"], limit=1024), r["remedy"])
        assert r["metrics"]["test_acc"] == pytest.approx(alone.test_acc, abs=2e-3)
    assert records["init_std1-seed43"]["epoch_time"] == records["baseline-seed42"]["epoch_time"]

"""The GPU fast paths' self-checks, on the CPU: a stand-in for the CUDA graph (a replay
callable over a static index buffer) and the batched seeds, each right and deliberately
broken. A broken one must be caught, and the run must then train exactly as eager does."""

from dataclasses import replace

import pytest
import torch

from vgbench import batched, data, registry, selfcheck, session, summary, train

LIMIT = 4096  # 3686 training samples: 7 full batches of 512, so the 4th one is captured


class StandIn(train.StepGraph):
    """The CUDA graph's contract on the CPU: replay() trains on whatever self.idx holds."""

    def record(self):
        return lambda: self.run.train_step(self.idx)


class StaleBuffer(train.StepGraph):
    """A broken replay: it kept a copy of the batch it was captured on (a stale buffer)."""

    def record(self):
        stale = self.idx.clone()
        return lambda: self.run.train_step(stale)


@pytest.fixture(autouse=True)
def fresh_session():
    selfcheck.reset()
    yield
    selfcheck.reset()


@pytest.fixture(scope="module")
def splits(real_data):
    return data.split(real_data, 42, limit=LIMIT)


def trained(name, splits, graph=None, epochs=2):
    """A history of name on splits, its full batches stepped by graph (a StepGraph class)."""
    cfg = replace(registry.get(name).config, epochs=epochs)
    run = train.Run(cfg, splits, name)
    if graph is not None:
        run.graphs = graph(run)
    while not run.done:
        run.step()
    return run.finish()


@pytest.mark.parametrize("name", ["baseline", "adam", "batchnorm", "clip_std10"])
def test_a_faithful_replay_passes_and_trains_as_eager(splits, name):
    """Weights, optimizer state (adam), norm statistics (batchnorm), clipping: the check
    passes, and the run is bit-identical to eager (the check put the state back)."""
    h = trained(name, splits, StandIn)
    eager = trained(name, splits)
    assert h.cuda_graph == "captured"
    [check] = h.self_checks
    assert check["ok"] and check["what"] == selfcheck.GRAPH and check["here"]
    assert check["diff"] == 0.0 and check["tolerance"] >= selfcheck.FLOOR  # the same ops
    assert h.train_loss == eager.train_loss and h.val_acc == eager.val_acc
    assert h.diagnostics == eager.diagnostics and eager.self_checks == []


@pytest.mark.parametrize("name", ["baseline", "adam", "batchnorm"])
def test_a_stale_input_buffer_is_caught_and_the_run_falls_back_to_eager(splits, name):
    h = trained(name, splits, StaleBuffer)
    eager = trained(name, splits)
    assert h.cuda_graph.startswith("eager (self-check failed: cuda graph differs from eager")
    [check] = h.self_checks
    assert not check["ok"] and check["diff"] > 100 * check["tolerance"]  # order 1 of the change
    assert h.train_loss == eager.train_loss and h.val_acc == eager.val_acc
    # the rest of the session: eager from the start, saying why
    later = trained("relu", splits, StandIn, epochs=1)
    assert later.cuda_graph.startswith("eager (self-check failed earlier in this session: ")
    assert later.self_checks == [{**check, "here": False}]


def test_a_check_runs_once_per_kind_of_step(splits):
    first = trained("baseline", splits, StandIn, epochs=1)
    deeper = train.Run(replace(registry.get("baseline").config, epochs=1, n_layer=3), splits)
    deeper.graphs = StandIn(deeper)
    deeper.step()
    other = trained("adam", splits, StandIn, epochs=1)
    assert first.self_checks[0]["here"]
    assert deeper.finish().self_checks == [{**first.self_checks[0], "here": False}]
    assert other.self_checks[0]["here"]  # another optimizer: its own check


def test_difference_is_relative_to_each_tensors_change():
    start = {"w": torch.zeros(3), "v": torch.ones(3)}
    eager = {"w": torch.tensor([1e-3, 0.0, 0.0]), "v": torch.ones(3)}
    assert selfcheck.difference(eager, eager, start) == {"w": 0.0, "v": 0.0}
    fast = {"w": torch.tensor([2e-3, 0.0, 0.0]), "v": torch.ones(3)}
    assert selfcheck.difference(fast, eager, start)["w"] == pytest.approx(1.0, rel=1e-3)
    moved = {"w": eager["w"], "v": torch.tensor([1.0, 1.0, 1.5])}  # eager left v alone
    assert selfcheck.difference(moved, eager, start)["v"] == float("inf")
    rounding = {"w": eager["w"], "v": torch.ones(3).nextafter(torch.full((3,), 2.0))}
    assert selfcheck.difference(rounding, eager, start)["v"] == 0.0  # one float step: forgiven


def test_each_tensor_has_its_own_tolerance():
    """A tensor whose change is rounding noise (nudged eager run far off) may differ as
    much; one whose change is clean may not."""
    start = {"noisy": torch.zeros(2), "clean": torch.zeros(2)}
    eager = {"noisy": torch.tensor([1e-3, 0.0]), "clean": torch.tensor([1.0, 0.0])}
    again = {"noisy": torch.tensor([2e-3, 0.0]), "clean": torch.tensor([1.0, 0.0])}
    fast = {"noisy": torch.tensor([3e-3, 0.0]), "clean": torch.tensor([1.0, 0.0])}
    r = selfcheck.judge("x", fast, eager, again, start, 0.0)
    assert r.ok and r.worst == "noisy" and r.tolerance == pytest.approx(10.0)
    fast["clean"] = torch.tensor([1.01, 0.0])
    r = selfcheck.judge("x", fast, eager, again, start, 0.0)
    assert not r.ok and r.worst == "clean" and r.tolerance == selfcheck.FLOOR


BATCH_SEEDS = (42, 43)


@pytest.fixture(scope="module")
def seed_splits(real_data):
    return {s: data.split(real_data, s, limit=2048) for s in BATCH_SEEDS}


@pytest.mark.parametrize("name", ["baseline", "adam", "batchnorm", "init_std10", "clip_std10",
                                  "gradnorm"])
def test_batched_seeds_pass_their_check(seed_splits, name):
    """Batched matrix multiplies round differently; the saturated N(0, 10) nets amplify
    that to O(1) of a step's change, and the nudged eager run shows the same, so the check
    passes (worst over every batchable remedy and seeds 42-45: 0.76 of the tolerance,
    clip_std10). It leaves no trace in the run."""
    cfg = replace(registry.get(name).config, epochs=1)
    run = batched.BatchedRun.of_seeds(cfg, seed_splits, name)
    assert run.check.ok, run.check.reason()
    again = batched.BatchedRun.of_seeds(cfg, seed_splits, name)  # checked: no steps run
    assert not again.check.here
    run.step(), again.step()
    hs, unchecked = run.finish(), again.finish()
    for i, (h, u) in enumerate(zip(hs, unchecked)):
        assert h.train_loss == u.train_loss and h.val_acc == u.val_acc
        assert h.self_checks == [(run.check if i == 0 else run.check.elsewhere()).to_dict()]


class MixedSeeds(batched.BatchedRun):
    """A broken batched step: each model trains on the next seed's batch."""

    def _gather(self, idx):
        x, y = super()._gather(idx)
        return x.roll(1, 0), y.roll(1, 0)


def test_mixed_up_seeds_are_caught(seed_splits):
    cfg = replace(registry.get("relu").config, epochs=1)
    with pytest.raises(selfcheck.Mismatch, match="batched seeds differs from eager") as exc:
        MixedSeeds.of_seeds(cfg, seed_splits, "relu")
    assert exc.value.result.diff > 100 * selfcheck.FLOOR
    with pytest.raises(selfcheck.Mismatch):  # and the session trains one by one after
        batched.BatchedRun.of_seeds(cfg, seed_splits, "relu")


def test_the_harness_falls_back_to_one_by_one_and_warns(real_data, tmp_path, monkeypatch):
    monkeypatch.setattr(batched, "BatchedRun", MixedSeeds)
    monkeypatch.setattr(data, "load_cached", lambda *a, **k: real_data)
    settings = session.Settings(budget="quick", epochs=1, n_seeds=2, remedies=("relu",),
                                limit=1024, out=str(tmp_path), figures=False,
                                batch_seeds="on", device="cpu")
    records = [session.run_case(c, settings) for c in settings.cases]
    for r, seed in zip(records, BATCH_SEEDS):
        assert r["seed"] == seed and r["batched_with"] is None
        [check] = r["self_checks"]
        assert not check["ok"] and check["what"] == selfcheck.BATCHED
    assert [r["self_checks"][0]["here"] for r in records] == [True, False]
    words = summary.self_check_words(records)
    assert words.startswith("WARNING: the batched seeds self-check failed, 2 case(s) trained "
                            "without it: ")
    alone = train.train(replace(settings.config(registry.get("relu"), 43)),
                        data.split(real_data, 43, limit=1024), "relu")
    assert records[1]["metrics"]["test_acc"] == alone.test_acc


def test_the_header_counts_passed_checks():
    ok = selfcheck.Result(selfcheck.GRAPH, True, 0.0, "w", 0.0, 1e-3, 3, 0.25)
    records = [{"self_checks": [ok.to_dict()]}, {"self_checks": [ok.elsewhere().to_dict()]},
               {"self_checks": []}]
    assert summary.self_check_words(records) == "cuda graph self-check passed (1 check(s), 0.25 s)"
    assert summary.self_check_words([{"self_checks": []}]) == ""

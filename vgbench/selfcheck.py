"""Run-time self-checks of the GPU's fast paths against plain eager training.

On CUDA, vgbench replays each full-batch training step from a CUDA graph (train.StepGraph)
and trains a remedy's seeds as one batched model (batched.BatchedRun). Either can go subtly
wrong without an error: a replay that reads a stale input buffer, optimizer state or a random
stream read outside the graph, a batched step that mixes seeds. So before a run relies on
one, the same STEPS steps from the same state run both ways and the results are compared:

- 'cuda graph': STEPS different full batches replayed from the graph, against the same
  batches stepped eagerly, both from the state at capture (weights, optimizer state, norm
  statistics, the epoch's loss sum);
- 'batched seeds': STEPS batches of a group's stacked model (batched.BatchedRun: seeds,
  and remedies that differ only in init or learning rate), against each member stepped
  alone (Run's own training step and optimizer), both from the initial weights;
- 'group cuda graph': as 'cuda graph', for the group's captured step (every member's
  tensors compared).
Afterwards the state is put back, so the run trains exactly as it would without the check.

The measure, per tensor the steps change: the largest difference between the fast result and
the eager one, less ULPS float steps of the tensor's size, relative to the largest change
the eager steps made to it (a wrong update of a layer whose gradient vanishes counts as much
as one of the output layer). Each tensor's tolerance comes from the device: the eager steps
run a second time with every weight moved by one float step and each batch's samples in
another order (the same mathematics, other rounding); what that changes (its rounding not
forgiven), times SPREAD_FACTOR and at least FLOOR (BATCHED_FLOOR for a group, whose kernels
differ), is the tolerance. Plain reruns are no measure: on the CPU
and for most GPU kernels they are bit-identical, while a saturated net (init_std10,
clip_std10) turns the rounding of another matrix-multiply kernel into O(1) of a step's
change, and the nudged rerun shows that too. How far correct and mixed-up seeds sit from
the tolerance on every batchable remedy: tests/test_selfcheck.py and docs/speed.md.

A check runs once per session (per process: each xdist worker checks for itself) for each
distinct step: module types, optimizer and clipping (`step_key`). A mismatch switches that
path off for the rest of the session: the reason goes into every affected history
(History.self_checks; for graphs also History.cuda_graph = 'eager (self-check failed: ...)')
and into the summary's header. The cost is 2 x STEPS eager steps, STEPS fast ones and four
copies of the state, once per distinct step and session (a group's check: 2 x STEPS eager
steps per member; timed in `Result.seconds`; docs/speed.md has the GPU's numbers).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

STEPS = 3
"""Steps each way; different batches, so a replay stuck on one batch shows."""
FLOOR = 1e-3
"""Smallest tolerance, as a fraction of how far the steps moved a tensor (float32 rounding
of a few steps is ~1e-6 of it where the net is not saturated)."""
BATCHED_FLOOR = 1e-2
"""The batched check's FLOOR: a group's step runs other kernels than a run alone (batched
matrix multiplies), and their rounding can flip a unit at a kink (SELU's 0, a ReLU's),
which a nudged eager rerun need not show: measured over every batchable remedy at seeds
42-45 and 1 and 2 threads, a correct member differed from its run alone by up to 3.0e-3 of
a tensor's change where the rerun showed none (selu, one thread), while a member trained on
another member's batches differs by 0.3 or more (xavier; every remedy but init_std10, whose
saturated net's rounding spread hides it: docs/speed.md)."""
ULPS = 8
"""Float32 rounding forgiven per tensor: ULPS x eps x its largest value (a weight whose change
is below its own rounding step cannot be judged; a wrong batch shows in the others)."""
SPREAD_FACTOR = 10.0
"""Tolerance = SPREAD_FACTOR x the device's eager run-to-run spread (when above FLOOR)."""
GRAPH, BATCHED, GROUP_GRAPH = "cuda graph", "batched seeds", "group cuda graph"


@dataclass
class Result:
    """One comparison of a fast path with eager steps."""

    what: str
    """GRAPH or BATCHED."""
    ok: bool
    diff: float
    """Largest difference fast vs eager, as a fraction of the tensor's eager change."""
    worst: str
    """The tensor where that difference is."""
    spread: float
    """The same measure between two eager runs of the same steps."""
    tolerance: float
    steps: int
    seconds: float
    """Wall time of the whole check (both eager runs, the fast one, the copies)."""
    here: bool = True
    """False: the check ran earlier in this session, for a run with the same step."""

    def reason(self) -> str:
        """One line: what differed and by how much."""
        verb = "differs from" if not self.ok else "matches"
        return (f"{self.what} {verb} eager after {self.steps} steps: {self.worst} off by "
                f"{self.diff:.2g} of its change (tolerance {self.tolerance:.2g}, eager "
                f"spread {self.spread:.2g})")

    def to_dict(self) -> dict:
        return asdict(self)

    def elsewhere(self) -> "Result":
        """This result as seen by a later run of the session (here=False)."""
        return Result(**{**self.to_dict(), "here": False})


class Mismatch(RuntimeError):
    """A fast path trained differently from eager; `result` says how."""

    def __init__(self, result: Result):
        super().__init__(result.reason())
        self.result = result


_PASSED: dict[tuple, Result] = {}
_FAILED: dict[str, Result] = {}


def failed(what: str) -> Result | None:
    """The failed check that switched `what` off for this session, if any."""
    return _FAILED.get(what)


def earlier(key: tuple) -> Result | None:
    """A passed check of this session for the same step (key from step_key), if any."""
    found = _PASSED.get(key)
    return None if found is None else found.elsewhere()


def remember(key: tuple, result: Result) -> Result:
    """Book a check's result for the session; returns it."""
    if result.ok:
        _PASSED[key] = result
    else:
        _FAILED.setdefault(result.what, result)
    return result


def reset() -> None:
    """Forget this session's checks (tests)."""
    _PASSED.clear()
    _FAILED.clear()


def step_key(what: str, net: torch.nn.Module, opt, cfg) -> tuple:
    """What makes two runs' steps the same code: the device, the module types, the
    optimizer, clipping; not the depth, width or seed."""
    device = next(net.parameters()).device
    modules = tuple(sorted({f"{type(m).__module__}.{type(m).__qualname__}"
                            for m in net.modules()}))
    return (what, str(device), modules, f"{type(opt).__module__}.{type(opt).__qualname__}",
            cfg.clip_norm is not None)


# --- state: copy, put back, compare -----------------------------------------------------

def run_state(run) -> dict[str, torch.Tensor]:
    """The tensors a train.Run's step changes, by name: parameters and buffers of the
    network being trained, the optimizer's state, the epoch's loss sum (a BatchedRun's:
    its stacked ones)."""
    if hasattr(run, "stacked_state"):
        return run.stacked_state()
    state = {f"{name}": p for name, p in run.net.named_parameters()}
    state.update({f"buffer {name}": b for name, b in run.net.named_buffers()})
    state.update(optimizer_state(run.opt, dict(run.net.named_parameters())))
    state["loss sum"] = run.loss_sum
    return state


def optimizer_state(opt, named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The optimizer's tensors, named 'optimizer <param>.<key>' (params by name in named)."""
    names = {id(p): n for n, p in named.items()}
    return {f"optimizer {names.get(id(p), '?')}.{k}": v
            for p, st in opt.state.items() for k, v in st.items()
            if isinstance(v, torch.Tensor)}


def copy_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


@torch.no_grad()
def put_back(state: dict[str, torch.Tensor], saved: dict[str, torch.Tensor], opt=None,
             opt_keys: set | None = None) -> None:
    """Copy saved into state's tensors in place (a CUDA graph holds their addresses); with
    opt, drop optimizer state that did not exist when opt_keys was taken."""
    for k, v in state.items():
        v.copy_(saved[k])
    if opt is not None:
        for p in list(opt.state):
            for k in list(opt.state[p]):
                if (id(p), k) not in opt_keys:
                    del opt.state[p][k]
            if not opt.state[p]:
                del opt.state[p]


def opt_keys(opt) -> set:
    """Which optimizer state exists now (for put_back)."""
    return {(id(p), k) for p, st in opt.state.items() for k in st}


def difference(fast: dict, eager: dict, start: dict, forgive: bool = True) -> dict[str, float]:
    """Per tensor: (|fast - eager| - ULPS rounding, largest over the tensor) / its largest
    eager change. A tensor the steps left unchanged counts 0 when fast left it unchanged
    too (up to rounding), else inf. forgive=False: without the ULPS rounding taken off (the
    spread between two eager runs, which sets the tolerance: a tensor whose change is a few
    float steps of its values gets the tolerance its rounding shows, not FLOOR)."""
    out = {}
    for k, e in eager.items():
        if not e.numel():
            continue
        e = e.double()
        s = start[k].double().to(e.device) if k in start else torch.zeros_like(e)
        moved = (e - s).abs().max().item()
        off = (fast[k].double().to(e.device) - e).abs().max().item()
        if off != off:  # nan
            off = float("inf")
        if forgive:
            off = max(0.0, off - ULPS * torch.finfo(torch.float32).eps * e.abs().max().item())
        out[k] = off / moved if moved > 0 else (0.0 if off == 0 else float("inf"))
    return out


def judge(what: str, fast: dict, eager: dict, again: dict, start: dict,
          seconds: float, floor: float = FLOOR) -> Result:
    """Compare the fast result with eager, tensor by tensor; the second eager run (other
    rounding) sets each tensor's tolerance, at least floor. Reports the tensor nearest to
    failing."""
    kinds = sorted(set(eager) ^ set(fast))
    if kinds:
        return Result(what, False, float("inf"), f"state differs in kind: {kinds[:3]}",
                      0.0, floor, STEPS, seconds)
    spread = difference(again, eager, start, forgive=False)
    diff = difference(fast, eager, start)
    tol = {k: max(floor, SPREAD_FACTOR * spread[k]) for k in diff}
    worst = max(diff, key=lambda k: diff[k] / tol[k])
    return Result(what, all(diff[k] <= tol[k] for k in diff), diff[worst], worst,
                  spread[worst], tol[worst], STEPS, seconds)


def reordered(batch: torch.Tensor) -> torch.Tensor:
    """The same samples in another order: the same mean loss and batch statistics, other
    rounding of every sum over the batch (a group's (K, batch): each member's own)."""
    return batch.flip(-1)


@torch.no_grad()
def nudge(params) -> None:
    """Move every weight by one float step, up or down at random (a fixed stream): the
    size of a rounding difference, which a saturated net amplifies as much as another
    kernel's rounding (batched matrix multiplies) would."""
    gen = torch.Generator().manual_seed(0)
    for p in params:
        up = torch.rand(p.shape, generator=gen) < 0.5
        far = torch.full(p.shape, float("inf")).where(up, float("-inf")).to(p)
        p.copy_(torch.nextafter(p, far))


# --- the two checks ---------------------------------------------------------------------

def eager_twice(run, batches: list[torch.Tensor], state: dict, start: dict, keys: set):
    """run's eager steps on batches from start, then again with other rounding (weights
    nudged, batches reordered): both resulting states (with any optimizer state the steps
    made); run is put back to start after each."""
    results = []
    for rounding in (False, True):
        if rounding:
            nudge(run.params)
        for b in batches:
            run.train_step(reordered(b) if rounding else b)
        results.append(copy_state(run_state(run)))
        put_back(state, start, run.opt, keys)
    return results


def check_graph(run, replay, idx_buffer: torch.Tensor, batches: list[torch.Tensor],
                what: str = GRAPH) -> Result:
    """Replay (which trains on idx_buffer's batch) against run's eager step, on batches,
    from run's current state; the state is put back afterwards."""
    from vgbench.machine import sync

    t0 = time.perf_counter()
    state = run_state(run)
    start, keys = copy_state(state), opt_keys(run.opt)
    first, again = eager_twice(run, batches, state, start, keys)
    for b in batches:
        idx_buffer.copy_(b)
        replay()
    fast = copy_state(run_state(run))
    put_back(state, start, run.opt, keys)
    sync(run.device)
    if hasattr(run, "stacked_state"):  # a group: each member's change is its own measure
        first, again, fast, start = (members(st, len(run.runs))
                                     for st in (first, again, fast, start))
    return judge(what, fast, first, again, start, time.perf_counter() - t0)


def members(state: dict[str, torch.Tensor], k_models: int) -> dict[str, torch.Tensor]:
    """A group's stacked state as each member's own tensors, 'member K: name' (a scalar,
    such as Adam's step count, is every member's)."""
    return {f"member {k}: {name}": (v[k] if v.dim() and v.shape[0] == k_models else v)
            for name, v in state.items() for k in range(k_models)}


def check_batched(brun) -> Result:
    """brun's batched step against each member's Run stepping alone, on STEPS batches,
    from the initial weights (each member's tensors compared as its own, named 'member
    K: ...'); all are put back afterwards."""
    from vgbench.machine import sync

    t0 = time.perf_counter()
    bs, n, k_models = brun.cfg.batch_size, brun.n_train, len(brun.runs)
    batches = [torch.arange(j * bs, (j + 1) * bs, device=brun.device) % n
               for j in range(STEPS)]
    first, again, start = {}, {}, {}
    for k, alone in enumerate(brun.runs):
        state = run_state(alone)
        begin, keys = copy_state(state), opt_keys(alone.opt)
        one, other = eager_twice(alone, batches, state, begin, keys)
        for mine, theirs in ((first, one), (again, other), (start, begin)):
            mine.update({f"member {k}: {name}": v for name, v in theirs.items()})
    stacked = brun.stacked_state()
    b_start, b_keys = copy_state(stacked), opt_keys(brun.opt)
    brun.loss_sum.zero_()
    for b in batches:
        brun.train_step(b.expand(k_models, -1))
    fast = copy_state(members(brun.stacked_state(), k_models))
    put_back(stacked, b_start, brun.opt, b_keys)
    sync(brun.device)
    return judge(BATCHED, fast, first, again, start, time.perf_counter() - t0,
                 BATCHED_FLOOR)

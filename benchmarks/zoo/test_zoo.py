"""A slice of the zoo for CI: a few real architectures and broken twins, one seed, each
verdict checked against its own training run (benchmarks/zoo/zoo.py).

    pytest benchmarks/zoo -n auto
"""

import pytest

import zoo

SLICE = [("gpt", None), ("gpt", "rezero"), ("transformer_pre", "rezero"),
         ("resnet18", None), ("resnet18", "dead"), ("resnet18", "lr_x100")]
"""(model, twin) pairs, cheap on a CPU, of every kind of call (healthy and trained; broken,
did not train, and named by its cause), each right on seed 0 in the first zoo run; the
zoo's misses are in README, "The zoo", not hidden here."""


@pytest.mark.parametrize("name,twin", SLICE, ids=[f"{n}-{t or 'design'}" for n, t in SLICE])
def test_the_verdict_agrees_with_training(name, twin):
    r = zoo.run_case(name, twin, seed=0)
    assert r["learned"] == (twin in (None, "rezero")), (
        f"ground truth moved: {name} {twin or '(design)'} reached {r['acc']:.3f} (learned "
        f"means >= {zoo.LEARNED})")
    assert zoo.judge(r) == "right", f"{r['why']} (held-out accuracy {r['acc']:.3f})"

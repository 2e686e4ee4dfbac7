"""vgbench.lightning.GradientFlow with a real Lightning Trainer on the CPU."""

import csv
import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

if os.environ.get("VGBENCH_REQUIRE_LIGHTNING"):
    import lightning  # noqa: F401 - CI must run these tests, not skip them
L = pytest.importorskip("lightning")
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from vgbench.diagnose import VERDICTS  # noqa: E402
from vgbench.lightning import GradientFlow  # noqa: E402


class Net(L.LightningModule):
    def __init__(self, act, depth, norm=False, lr=0.01):
        super().__init__()
        torch.manual_seed(0)
        layers = [nn.Flatten(), nn.Linear(784, 64), act()]
        for _ in range(depth - 1):
            layers += [nn.Linear(64, 64)] + ([nn.BatchNorm1d(64)] if norm else []) + [act()]
        self.net, self.lr = nn.Sequential(*layers, nn.Linear(64, 10)), lr

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def loader():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(512, 1, 28, 28, generator=g), torch.randint(0, 10, (512,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)


def fit(module, tmp_path, callback, **kw):
    trainer = L.Trainer(max_steps=12, accelerator="cpu", devices=1,
                        logger=CSVLogger(tmp_path, name="run"), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[callback], **kw)
    trainer.fit(module, loader())
    return trainer


@pytest.mark.parametrize("act, depth, norm, verdict", [(nn.ReLU, 4, True, "healthy"),
                                                       (nn.Sigmoid, 8, False, "vanishing")])
def test_the_callback_gives_the_verdict_of_the_steps_lightning_ran(tmp_path, act, depth,
                                                                   norm, verdict):
    cb = GradientFlow(every=4)
    trainer = fit(Net(act, depth, norm), tmp_path, cb)
    w = cb.watch
    assert w.step_no == 12 and [r["step"] for r in w.timeline] == [0, 4, 8]
    assert {r["verdict"] for r in w.timeline} == {verdict}
    assert all(r["loss"] is not None for r in w.timeline)
    assert all(g > 0 for g in w.points["grad_norm"][0])  # the closure's gradients, not none
    folder = tmp_path / "run" / "version_0" / "vgbench"
    saved = json.loads((folder / "history.json").read_text())
    assert [r["verdict"] for r in saved["watch"]["timeline"]] == [verdict] * 3
    assert "verdict per sampled step" in (folder / "report.html").read_text()
    trainer.logger.save()
    rows = list(csv.DictReader(open(tmp_path / "run" / "version_0" / "metrics.csv")))
    logged = [float(r["vgbench/verdict"]) for r in rows if r.get("vgbench/verdict")]
    assert logged == [float(VERDICTS.index(verdict))] * 3
    assert any(k.startswith("vgbench/update_ratio/net.1.weight") for k in rows[0])


def test_accumulated_batches_are_one_step(tmp_path):
    cb = GradientFlow(every=2)
    fit(Net(nn.ReLU, 3, True), tmp_path, cb, accumulate_grad_batches=4)
    assert cb.watch.step_no == 12 and [r["step"] for r in cb.watch.timeline][:3] == [0, 2, 4]


def test_a_step_judged_by_the_loss_after_it_is_logged_too(tmp_path):
    """A large step waits one sampling interval for the losses after it (the last one until
    fit ends): every record still reaches the logger, once."""
    cb = GradientFlow(every=4)
    trainer = fit(Net(nn.Tanh, 4, lr=0.5), tmp_path, cb)
    w = cb.watch
    waited = [r for r in w.timeline if "loss_rise" in r["evidence"]]
    assert waited and waited[-1]["step"] == 8, w.timeline  # judged at fit's end
    trainer.logger.save()
    rows = list(csv.DictReader(open(tmp_path / "run" / "version_0" / "metrics.csv")))
    logged = [float(r["vgbench/verdict"]) for r in rows if r.get("vgbench/verdict")]
    assert logged == [float(VERDICTS.index(r["verdict"])) for r in w.timeline]

"""vgbench.huggingface.GradientFlow with a real transformers Trainer on the CPU: the
verdict of the steps the Trainer ran, its gradient accumulation counted as one step, the
files in its output folder. Nothing is downloaded: the model is a plain module."""

import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

if os.environ.get("VGBENCH_REQUIRE_HF"):  # .ci/run: never skipped in CI
    import transformers  # noqa: F401
transformers = pytest.importorskip("transformers", reason="the hf extra: pip install -e '.[hf]'")
from vgbench.huggingface import GradientFlow  # noqa: E402


class Net(nn.Module):
    """What the Trainer needs of a model: forward(**batch) -> {'loss', 'logits'}."""

    def __init__(self, act, depth, norm):
        super().__init__()
        torch.manual_seed(0)
        layers = [nn.Linear(32, 64), act()]
        for _ in range(depth - 1):
            layers += [nn.Linear(64, 64)] + ([nn.BatchNorm1d(64)] if norm else []) + [act()]
        self.net = nn.Sequential(*layers, nn.Linear(64, 10))

    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


class Data(torch.utils.data.Dataset):
    def __init__(self, n=192):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 32, generator=g)
        self.y = self.x[:, :10].argmax(1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def fit(model, tmp_path, callback, **kw):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=12, per_device_train_batch_size=16,
        learning_rate=0.05, optim="sgd", lr_scheduler_type="constant", report_to=[],
        save_strategy="no", use_cpu=True, disable_tqdm=True, logging_strategy="no",
        dataloader_num_workers=0, **kw)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Data(),
                                   callbacks=[callback])
    trainer.train()
    return trainer


@pytest.mark.parametrize("act, depth, norm, verdict", [(nn.ReLU, 4, True, "healthy"),
                                                       (nn.Sigmoid, 8, False, "vanishing")])
def test_the_callback_gives_the_verdict_of_the_steps_the_trainer_ran(tmp_path, act, depth,
                                                                     norm, verdict):
    cb = GradientFlow(every=4)
    fit(Net(act, depth, norm), tmp_path, cb)
    w = cb.watch
    assert w.step_no == 12 and [r["step"] for r in w.timeline] == [0, 4, 8]
    assert {r["verdict"] for r in w.timeline} == {verdict}
    assert all(g > 0 for g in w.points["grad_norm"][0])  # the step's gradients
    assert w.to_dict()["layers"][0] == "net.0.weight"
    saved = json.loads((tmp_path / "hf" / "vgbench" / "history.json").read_text())
    assert [r["verdict"] for r in saved["watch"]["timeline"]] == [verdict] * 3
    assert (tmp_path / "hf" / "vgbench" / "report.html").is_file()


def test_accumulated_batches_are_one_step(tmp_path):
    cb = GradientFlow(every=2)
    fit(Net(nn.ReLU, 3, True), tmp_path, cb, gradient_accumulation_steps=3)
    assert cb.watch.step_no == 12 and [r["step"] for r in cb.watch.timeline][:3] == [0, 2, 4]

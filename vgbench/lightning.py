"""vgbench's watch as a PyTorch Lightning callback (the optional extra vgbench[lightning]).

    trainer = Trainer(callbacks=[vgbench.lightning.GradientFlow(every=50)])

Every `every` optimizer steps it takes the verdict from the step Lightning ran (the
gradients in on_before_optimizer_step, after the closure's backward; the real update from
the weights before and after), logs the chain's numbers and the verdict through the
module's logger (`vgbench/...` keys), and at the end of fit writes history.json and
report.html into `<trainer.log_dir>/vgbench/`. The first optimizer of the module is watched.
"""

from __future__ import annotations

from pathlib import Path

from vgbench.diagnose import VERDICTS
from vgbench.monitor import DEFAULT_EVERY, Watch

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the older package name
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError:
        raise ImportError("vgbench.lightning needs PyTorch Lightning: pip install "
                          "'vgbench[lightning]' (or lightning)") from None


class GradientFlow(Callback):
    """The verdict every `every` optimizer steps of trainer.fit (see vgbench.watch for
    on_verdict and allow); `self.watch` holds the timeline once training has started."""

    def __init__(self, every: int = DEFAULT_EVERY, on_verdict=None,
                 allow: tuple[str, ...] = ("healthy",), log: bool = True):
        self.every, self.on_verdict, self.allow, self.log = every, on_verdict, allow, log
        self.watch: Watch | None = None
        self._logged = 0

    def on_train_start(self, trainer, pl_module) -> None:  # the optimizers exist by now
        if not trainer.optimizers:
            return
        out = Path(trainer.log_dir or trainer.default_root_dir) / "vgbench"
        self.watch = Watch(pl_module, trainer.optimizers[0], self.every, out,
                           self.on_verdict, self.allow, hook_before_step=False)
        self.watch.__enter__()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.watch is not None and optimizer is self.watch.opt:
            self.watch.before_step()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.watch is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.watch.step(loss)
        self._log_new(trainer)

    def _log_new(self, trainer) -> None:
        """The timeline records judged since the last call, through the trainer's logger (a
        step whose verdict waits for the losses after it is logged once judged)."""
        new = self.watch.timeline[self._logged:]
        self._logged = len(self.watch.timeline)
        if self.log and new and trainer.logger is not None:
            chain = self.watch.layout.chain()
            for record in new:
                k = self.watch.points["epoch"].index(record["step"])
                metrics = {"vgbench/verdict": float(VERDICTS.index(record["verdict"]))}
                for i in chain:
                    name = self.watch.layout.entries[i][0]
                    metrics[f"vgbench/grad_norm/{name}"] = self.watch.points["grad_norm"][k][i]
                    metrics[f"vgbench/update_ratio/{name}"] = \
                        self.watch.points["update_ratio"][k][i]
                trainer.logger.log_metrics(metrics, step=record["step"])

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.watch is not None:
            self.watch.close(write=trainer.is_global_zero)
            self._log_new(trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self.watch is not None:
            self.watch.close(write=False)

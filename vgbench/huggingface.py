"""vgbench's watch as a Hugging Face `TrainerCallback` (the optional extra vgbench[hf]).

    trainer = Trainer(model, args, train_dataset=ds,
                      callbacks=[vgbench.huggingface.GradientFlow(every=50)])

The same Watch as vgbench.watch and vgbench.lightning: the gradients are read in
on_pre_optimizer_step (after the Trainer's clipping, so what the optimizer gets), the real
update by the optimizer's own post-step hook (accelerate's wrapper looked through), and at
the end of train, history.json and report.html go into `<output_dir>/vgbench/` on the main
process. The Trainer gives callbacks no per-step loss, so the timeline's `loss` stays None.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vgbench.monitor import DEFAULT_EVERY, Watch

try:
    from transformers import TrainerCallback
except ImportError:
    raise ImportError("vgbench.huggingface needs transformers: pip install 'vgbench[hf]' "
                      "(or transformers and accelerate)") from None


class GradientFlow(TrainerCallback):
    """The verdict every `every` optimizer steps of trainer.train() (see vgbench.watch for
    on_verdict and allow); `self.watch` holds the timeline once training has started."""

    def __init__(self, every: int = DEFAULT_EVERY, on_verdict=None,
                 allow: tuple[str, ...] = ("healthy",)):
        self.every, self.on_verdict, self.allow = every, on_verdict, allow
        self.watch: Watch | None = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        while not type(optimizer).__module__.startswith("torch.optim") and isinstance(
                getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
            optimizer = optimizer.optimizer  # accelerate's AcceleratedOptimizer
        if model is None or not isinstance(optimizer, torch.optim.Optimizer):
            return
        self.watch = Watch(model, optimizer, self.every, Path(args.output_dir) / "vgbench",
                           self.on_verdict, self.allow, hook_before_step=False)
        self.watch.__enter__()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.watch is not None:
            self.watch.before_step()

    def on_train_end(self, args, state, control, **kwargs):
        if self.watch is not None:
            self.watch.close(write=state.is_world_process_zero)

"""Guards that stop a training whose result would be garbage, before a model is saved: a non-finite loss or gradient
norm, and an output distribution that has collapsed to uniform.

The HF Trainer hides a NaN loss (`logging_nan_inf_filter` logs the running mean instead, often `loss: 0`) and steps
the optimiser with a NaN gradient, so a diverged run ends "successfully" with NaN weights. Raising inside the node
means Kedro saves no new model version.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# A collapsed model predicts the uniform distribution (entropy ln |V|) whatever the input, and no weight changes its
# output (gradient norm 0). Either alone happens legitimately: an untrained model is near uniform (measured on the
# tiny Llama: 0.0015-0.02 nats below ln |V|, with a non-zero gradient), an unlearning method may flatten the forget
# answers, and a model that memorised its data in float32 can have a gradient of exactly 0 (softmax saturates at 1)
# with an entropy near 0. Only a dead network has both, so both must hold. The entropy tolerance sits far above
# float32 rounding of ln |V| (1e-5 at 128k tokens) and below the untrained models measured.
COLLAPSE_ENTROPY_TOLERANCE = 1e-3  # nats
COLLAPSE_GRAD_NORM = 1e-8
COLLAPSE_SAMPLE_ROWS, COLLAPSE_SAMPLE_TOKENS = 8, 64  # one small forward: 8 x 64 positions x |V| logits


class TrainingError(RuntimeError):
    """A training ended in a model that must not be saved (collapsed, or short of a configured quality floor)."""


class TrainingGuards:
    """Mixin for HF Trainer subclasses: stop at the first non-finite loss or gradient norm, naming the step.

    `job` names the training in messages (e.g. "finetune", "unlearn (flat)"); `remedy` says what to change.
    """

    def __init__(self, *args: Any, job: str, remedy: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.job, self.remedy = job, remedy
        self.add_callback(_log_last_step())
        # Without progress bars (not a terminal) the Trainer prints every log entry; the curves stream to MLflow.
        from transformers.trainer_callback import PrinterCallback

        self.remove_callback(PrinterCallback)

    def _where(self) -> str:
        state = self.state
        return f"at step {state.global_step + 1} of {state.max_steps} (epoch {state.epoch or 0:.2f})"

    def _nothing_saved(self) -> str:
        saving = self.args.save_strategy != "no"
        kept = f"; checkpoints of earlier epochs stay in {self.args.output_dir}" if saving else ""
        return f"stopping before it reaches the weights, so no model is saved{kept}"

    def stop_unless_finite_loss(self, loss: Any, details: str = "") -> None:
        """Raise FloatingPointError if `loss` (a scalar tensor) is NaN or infinite. One device sync per micro-batch."""
        import torch

        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{self.job}: the training loss is {loss.item()} {self._where()}{details}; "
                f"{self._nothing_saved()}. {self.remedy}"
            )

    def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
        # transformers 5 computes the (pre-clip) gradient norm of every optimiser step here, after the gradients are
        # reduced over processes and before `optimizer.step()`: checking it costs one sync and no extra pass, every
        # process sees the same value (all stop together), and a NaN never reaches the weights.
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if grad_norm is not None:  # DeepSpeed may not report one; the loss check still holds there
            value = grad_norm.item() if hasattr(grad_norm, "item") else float(grad_norm)
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{self.job}: the gradient norm is {value} {self._where()} (the loss was finite); "
                    f"{self._nothing_saved()}. {self.remedy}"
                )
        return grad_norm


def guarded_trainer() -> type:
    """`transformers.Trainer` with `TrainingGuards`; refuses a transformers whose Trainer has no per-step gradient
    norm hook, so that an upgrade cannot switch the check off silently."""
    from transformers import Trainer

    if not callable(getattr(Trainer, "_get_grad_norm", None)):
        raise ImportError(
            "transformers.Trainer has no _get_grad_norm: the gradient-norm guard (flat_pipeline.training.guards) "
            "needs transformers 5's training loop"
        )

    class GuardedTrainer(TrainingGuards, Trainer):
        pass

    return GuardedTrainer


def _log_last_step() -> Any:
    from transformers import TrainerCallback

    class LogLastStep(TrainerCallback):
        """Log the last optimiser step too (not only multiples of `logging_steps`): the history then ends with the
        final loss and gradient norm, which the collapse check reads, also from launched processes."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_log = True

    return LogLastStep()


def last_grad_norm(history: dict[str, list[dict[str, float]]]) -> float | None:
    entries = history.get("grad_norm") or []
    return entries[-1]["value"] if entries else None


def first_rows(rows: Any) -> Any:
    """The rows (a datasets.Dataset) the collapse check looks at."""
    return rows.select(range(min(len(rows), COLLAPSE_SAMPLE_ROWS)))


def check_trained_model(
    bundle: Any, input_ids: Sequence[Sequence[int]], history: Any, *, job: str, remedy: str
) -> None:
    """`check_not_collapsed` for a trained ModelBundle and the history its training logged."""
    check_not_collapsed(
        bundle.model, input_ids, bundle.tokenizer.pad_token_id, last_grad_norm(history), job=job, remedy=remedy
    )


def check_not_collapsed(
    model: Any, input_ids: Sequence[Sequence[int]], pad_token_id: int, grad_norm: float | None, *, job: str, remedy: str
) -> None:
    """Raise TrainingError if the trained model has collapsed: its last gradient norm is 0 and, on a few of its
    training inputs (`input_ids`), its mean next-token entropy is ln |V|. Costs nothing unless the gradient norm is 0
    (then one forward on at most 8 x 64 tokens)."""
    if grad_norm is None or grad_norm > COLLAPSE_GRAD_NORM or not input_ids:
        return
    entropy, vocab = _mean_entropy(model, input_ids, pad_token_id)
    uniform = math.log(vocab)
    if uniform - entropy > COLLAPSE_ENTROPY_TOLERANCE:
        return
    raise TrainingError(
        f"{job}: the trained model has collapsed: on {min(len(input_ids), COLLAPSE_SAMPLE_ROWS)} of its training "
        f"inputs it predicts the uniform distribution over all {vocab} tokens (mean entropy {entropy:.4f} nats, "
        f"ln {vocab} = {uniform:.4f}) and its last gradient norm is {grad_norm:g}, so no further step can move it; "
        f"it is not saved. {remedy}"
    )


def _mean_entropy(model: Any, input_ids: Sequence[Sequence[int]], pad_token_id: int) -> tuple[float, int]:
    import torch

    from flat_pipeline.batching import pad_batch

    rows = [list(ids[:COLLAPSE_SAMPLE_TOKENS]) for ids in input_ids[:COLLAPSE_SAMPLE_ROWS]]
    batch = pad_batch(rows, pad_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).logits.float()
    finally:
        model.train(was_training)
    logprobs = torch.log_softmax(logits, dim=-1)
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    mask = batch["attention_mask"].to(device).bool()
    return float(entropy[mask].mean()), logits.shape[-1]

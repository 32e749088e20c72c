"""Guards that stop a training whose result would be garbage, before a model is saved: a non-finite loss or gradient
norm; a diverging one (finite, but `divergence_factor` times its running median, or a loss beyond `loss_limit`); an
output distribution that has collapsed to uniform (checked at every epoch end, and once more after a launched
training); and, for a tune trial, a model that has become confidently wrong on data it should keep.

The HF Trainer hides a NaN loss (`logging_nan_inf_filter` logs the running mean instead, often `loss: 0`) and steps
the optimiser with a NaN gradient, so a diverged run ends "successfully" with NaN weights. Raising inside the node
means Kedro saves no new model version.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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

# A model that knows nothing scores ln |V| nats per answer token (an untrained one 0.01-0.04 above it); one more nat
# on answers it should keep is no longer ignorance but confident error. Measured with gradient ascent on the test
# world (ln |V| = 7.4): retain answers at 0.1-2 nats while unlearning works, 13.6 nats and up once the greedy answers
# are one token repeated (retain ROUGE 0); nothing in between.
WRECKED_MARGIN = 1.0  # nats per token above ln |V|
WRECKED_SAMPLE_ROWS = 16  # forwards of one example each: their logits at the answer positions only

# Divergence that stays finite: FLAT at learning rate 10 took its loss from 11 to 7576 and the gradient norm to 2.9e8
# and ended "successfully" (on the test world's tiny Llama: 7 to 1255 at step 2). Our losses are per-token means of
# log-probabilities, divergences or activation distances: a thousand nats is no sane value (a 49k vocabulary's
# uniform guess costs 10.8). A slower divergence is caught by its growth over the running median; gradient ascent's
# loss legitimately grows some 300-fold (0.05 to 15 nats) as it unlearns, so the allowed growth is far above that.
# The median needs a few steps to mean anything.
DIVERGENCE_FACTOR = 1.0e4  # default of <block>.divergence_factor
LOSS_LIMIT = 1.0e3  # default of <block>.loss_limit
DIVERGENCE_MIN_HISTORY = 4  # steps seen before the growth check starts
# The growth is measured from at least this median: a memorised finetune's loss or gradient norm of 1e-4 jumping to 1
# on one batch is no divergence.
DIVERGENCE_MEDIAN_FLOOR = 1.0e-2
DIVERGENCE_WINDOW = 100  # the running median is over this many last values


class TrainingError(RuntimeError):
    """A training ended in a model that must not be saved (collapsed, wrecked, or short of a configured quality
    floor)."""


@dataclass(frozen=True)
class CollapseSample:
    """The training inputs the collapse check runs the model on (`first_rows` of the tokenised training set, as
    token ids) and the pad id that batches them."""

    input_ids: Sequence[Sequence[int]]
    pad_token_id: int


class TrainingGuards:
    """Mixin for HF Trainer subclasses: stop at the first non-finite or diverging loss or gradient norm, naming the
    step and the learning rate, and at the end of the first epoch after which the model has collapsed
    (`check_not_collapsed` on `collapse_sample`).

    `job` names the training in messages (e.g. "finetune", "unlearn (flat)"); `remedy` says what to change; `block`
    names the parameters (`unlearn`, `finetune.training`) whose `divergence_factor` and `loss_limit` are given.
    """

    def __init__(
        self, *args: Any, job: str, remedy: str, collapse_sample: CollapseSample, block: str = "training",
        divergence_factor: float = DIVERGENCE_FACTOR, loss_limit: float = LOSS_LIMIT, **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.job, self.remedy, self.collapse_sample = job, remedy, collapse_sample
        self.block, self.divergence_factor, self.loss_limit = block, divergence_factor, loss_limit
        self._recent = {"loss": deque(maxlen=DIVERGENCE_WINDOW), "gradient norm": deque(maxlen=DIVERGENCE_WINDOW)}
        self.last_grad_norm: float | None = None  # of the last optimiser step, as the gradient guard read it
        self.add_callback(_log_last_step())
        self.add_callback(_collapse_check(self))
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

    def _learning_rate(self) -> str:
        try:
            return f"{self._get_learning_rate():.3g}"
        except Exception:  # noqa: BLE001  (no scheduler yet: the configured rate)
            return f"{self.args.learning_rate:.3g}"

    def _stop_if_diverging(self, what: str, value: float) -> None:
        """Raise FloatingPointError if |value| grew `divergence_factor`-fold over the running median of the last
        values of `what`; then remember it."""
        recent = self._recent[what]
        if len(recent) >= DIVERGENCE_MIN_HISTORY:
            median = statistics.median(recent)
            if abs(value) > self.divergence_factor * max(median, DIVERGENCE_MEDIAN_FLOOR):
                raise FloatingPointError(
                    f"{self.job}: the training diverged {self._where()}: the {what} is {value:.4g}, "
                    f"{abs(value) / max(median, DIVERGENCE_MEDIAN_FLOOR):.3g} times its running median {median:.4g} "
                    f"({self.block}.divergence_factor "
                    f"= {self.divergence_factor:g}) at learning rate {self._learning_rate()}; {self._nothing_saved()}. "
                    f"{self.remedy}"
                )
        recent.append(abs(value))

    def stop_unless_finite_loss(self, loss: Any, details: str | Callable[[], str] = "") -> None:
        """Raise FloatingPointError if `loss` (a scalar tensor) is NaN or infinite, beyond `loss_limit`, or diverging
        (`divergence_factor`); `details` (or what it returns, only then) is added to the message. One device sync per
        micro-batch."""
        value = float(loss.detach())
        if callable(details) and (not math.isfinite(value) or abs(value) > self.loss_limit):
            details = details()
        if not math.isfinite(value):
            raise FloatingPointError(
                f"{self.job}: the training loss is {value} {self._where()}{details}; "
                f"{self._nothing_saved()}. {self.remedy}"
            )
        if abs(value) > self.loss_limit:
            raise FloatingPointError(
                f"{self.job}: the training diverged {self._where()}{details}: the loss is {value:.4g}, beyond "
                f"{self.block}.loss_limit = {self.loss_limit:g}, at learning rate {self._learning_rate()}; "
                f"{self._nothing_saved()}. {self.remedy}"
            )
        self._stop_if_diverging("loss", value)

    def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
        # transformers 5 computes the (pre-clip) gradient norm of every optimiser step here, after the gradients are
        # reduced over processes and before `optimizer.step()`: checking it costs one sync and no extra pass, every
        # process sees the same value (all stop together), and a NaN never reaches the weights.
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if grad_norm is not None:  # DeepSpeed may not report one; the loss check still holds there
            value = grad_norm.item() if hasattr(grad_norm, "item") else float(grad_norm)
            self.last_grad_norm = value
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{self.job}: the gradient norm is {value} {self._where()} (the loss was finite); "
                    f"{self._nothing_saved()}. {self.remedy}"
                )
            self._stop_if_diverging("gradient norm", value)
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


def _collapse_check(trainer: Any) -> Any:
    from transformers import TrainerCallback

    class CollapseCheck(TrainerCallback):
        """`check_not_collapsed` at every epoch end, before that epoch's checkpoint is saved. It reads the gradient
        norm the gradient guard already has, so unless that is 0 it costs nothing (no forward, no sync).

        Skipped where FSDP or DeepSpeed shard the weights (a forward outside their wrapper would see shards); the
        launching process checks the whole model after training there."""

        def on_epoch_end(self, args, state, control, **kwargs):
            if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
                return
            sample = trainer.collapse_sample
            check_not_collapsed(
                trainer.model, sample.input_ids, sample.pad_token_id, trainer.last_grad_norm,
                job=trainer.job, remedy=trainer.remedy,
                at=f"by the end of epoch {state.epoch:g} of {args.num_train_epochs:g} (step {state.global_step} of "
                f"{state.max_steps})",
            )  # fmt: skip

    return CollapseCheck()


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
    model: Any,
    input_ids: Sequence[Sequence[int]],
    pad_token_id: int,
    grad_norm: float | None,
    *,
    job: str,
    remedy: str,
    at: str | None = None,
) -> None:
    """Raise TrainingError if the model has collapsed: its last gradient norm is 0 and, on a few of its training
    inputs (`input_ids`), its mean next-token entropy is ln |V|. Costs nothing unless the gradient norm is 0 (then one
    forward on at most 8 x 64 tokens). `at` says when, during training (e.g. "by the end of epoch 1 of 4 (...)");
    None: the trained model, after training."""
    if grad_norm is None or grad_norm > COLLAPSE_GRAD_NORM or not input_ids:
        return
    entropy, vocab = _mean_entropy(model, input_ids, pad_token_id)
    uniform = math.log(vocab)
    if uniform - entropy > COLLAPSE_ENTROPY_TOLERANCE:
        return
    if at is None:
        what, outcome = "the trained model has collapsed", "it is not saved"
    else:
        what, outcome = f"the model has collapsed {at}", "training stops here and no model is saved"
    raise TrainingError(
        f"{job}: {what}: on {min(len(input_ids), COLLAPSE_SAMPLE_ROWS)} of its training inputs it predicts the "
        f"uniform distribution over all {vocab} tokens (mean entropy {entropy:.4f} nats, ln {vocab} = "
        f"{uniform:.4f}) and its last gradient norm is {grad_norm:g}, so no further step can move it; {outcome}. "
        f"{remedy}"
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


def check_not_wrecked(
    model: Any,
    input_ids: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]],
    pad_token_id: int,
    *,
    about: str,
    job: str,
    remedy: str,
) -> None:
    """Raise TrainingError if the model is confidently wrong on answers it should still know: on the first
    `WRECKED_SAMPLE_ROWS` examples (`input_ids`, `labels` as `encode_example` builds them; `about` names them, e.g.
    "retain answers"), its mean answer-token loss exceeds ln |V| by more than `WRECKED_MARGIN`.

    The other guards miss such a model: an unbounded objective (gradient ascent) keeps its loss and gradient finite
    while the logits grow, and its output is sharp, far from uniform. One forward per example; nothing with no
    examples.
    """
    rows = list(zip(input_ids, labels, strict=True))[:WRECKED_SAMPLE_ROWS]
    if not rows:
        return
    loss, vocab = _mean_answer_loss(model, rows, pad_token_id)
    uniform = math.log(vocab)
    if loss - uniform <= WRECKED_MARGIN:
        return
    raise TrainingError(
        f"{job}: the unlearned model is wrecked: on its first {len(rows)} {about} its mean token loss is {loss:.2f} "
        f"nats, worse than a uniform guess over its {vocab} tokens (ln {vocab} = {uniform:.2f}) by more than "
        f"{WRECKED_MARGIN:g} nat: it is confidently wrong, not just ignorant, and its scores would say nothing. "
        f"{remedy}"
    )


def _mean_answer_loss(
    model: Any, rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_token_id: int
) -> tuple[float, int]:
    """Mean cross-entropy over every answer token of `rows` (input ids, labels), and the vocabulary size."""
    import torch

    from flat_pipeline.batching import pad_batch
    from flat_pipeline.prompts import IGNORE_INDEX
    from flat_pipeline.scoring import answer_logits

    device = next(model.parameters()).device
    total, count, vocab = 0.0, 0, 0
    was_training = model.training
    model.eval()
    try:
        for ids, labels in rows:  # one at a time: a long answer's logits over a 128k vocabulary are large
            batch = {k: v.to(device) for k, v in pad_batch([ids], pad_token_id, labels=[labels]).items()}
            with torch.no_grad():
                logits, targets = answer_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
            answer = targets != IGNORE_INDEX
            logits, targets = logits[answer].float(), targets[answer]
            total += float((torch.logsumexp(logits, -1) - logits.gather(-1, targets[:, None])[:, 0]).sum())
            count, vocab = count + len(targets), logits.shape[-1]
    finally:
        model.train(was_training)
    return total / max(count, 1), vocab

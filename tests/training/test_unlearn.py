import pytest
import torch
from datasets import Dataset

from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.prompts import PromptFormat
from flat_pipeline.training.methods import flat_step
from flat_pipeline.training.unlearn import UnlearnCollator, UnlearnConfig, tokenize_forget, unlearn


@pytest.fixture
def bundle(tiny_model_dir):
    return load_causal_lm(str(tiny_model_dir))


@pytest.fixture(scope="module")
def forget_templates(small_world):
    rows = small_world["forget10_perturbed"]
    templates = ["I don't know.", "I have no idea.", "No clue, sorry.", "I can't say."]
    return Dataset.from_dict(
        {
            "prompt": [r["question"] for r in rows],
            "forget_answer": [r["answer"] for r in rows],
            "template_answers": [templates[i % 4 :] + templates[: i % 4] for i in range(len(rows))],
        }
    )


def reference_scores(model, batch, side, score):
    """Straightforward form: full logits at every position, log-softmax, per-example mean over answer tokens."""
    logits = model(input_ids=batch[f"{side}_input_ids"], attention_mask=batch[f"{side}_attention_mask"]).logits
    labels = batch[f"{side}_labels"][:, 1:]
    mask = labels != -100
    logprobs = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    values = logprobs.exp() if score == "prob" else logprobs
    return (values * mask).sum(1) / mask.sum(1)


@pytest.mark.parametrize("score", ["prob", "logprob"])
@pytest.mark.parametrize("divergence", ["kl", "js", "pearson", "tv"])
def test_step_loss_equals_the_straightforward_computation(bundle, forget_templates, score, divergence):
    encoded = tokenize_forget(forget_templates.select(range(6)), bundle.tokenizer, PromptFormat(), 512)
    batch = UnlearnCollator(bundle.tokenizer.pad_token_id, "fixed", 0)([encoded[i] for i in range(6)])
    config = UnlearnConfig(divergence=divergence, score=score)
    loss, scores = flat_step(bundle.model, batch, None, config)
    from flat_pipeline.losses import flat_loss

    with torch.no_grad():
        t, f = (reference_scores(bundle.model, batch, side, score) for side in ("template", "forget"))
    assert loss.item() == pytest.approx(flat_loss(t, f, divergence).item(), abs=1e-5)
    assert scores["forget_score"].item() == pytest.approx(f.mean().item(), abs=1e-5)


def test_collator_keeps_a_fixed_template_or_resamples_it_every_epoch(bundle, forget_templates):
    encoded = tokenize_forget(forget_templates.select(range(8)), bundle.tokenizer, PromptFormat(), 512)
    examples = [encoded[i] for i in range(8)]

    def templates_at(pairing, epoch):
        collator = UnlearnCollator(bundle.tokenizer.pad_token_id, pairing, seed=0)
        collator.epoch = epoch
        return collator(examples)["template_input_ids"].tolist()

    assert templates_at("fixed", 0) == templates_at("fixed", 3)
    assert templates_at("resample", 0) != templates_at("resample", 1)
    assert templates_at("resample", 2) == templates_at("resample", 2)


def test_unlearning_raises_template_scores_and_lowers_forget_scores(bundle, forget_templates):
    from flat_pipeline.training.finetune import FinetuneConfig, finetune

    # First make the forget answers likely, as on a finetuned model (on a random model every score is ~ log 1/V and
    # the KL weight on the forget side, exp(S_f - 1), is close to 0).
    rows = Dataset.from_dict({"question": forget_templates["prompt"], "answer": forget_templates["forget_answer"]})
    finetune(bundle, rows, FinetuneConfig(learning_rate=1e-2, num_train_epochs=30, per_device_train_batch_size=8))
    config = UnlearnConfig(learning_rate=3e-3, num_train_epochs=3, per_device_train_batch_size=8)
    _, history = unlearn(bundle, forget_templates, config)
    forget, template = history["forget_score"], history["template_score"]
    assert len(history["unlearn_loss"]) == 15  # 40 items / 8 x 3 epochs, logged every step
    assert forget[0]["value"] > -1.0  # memorised
    assert forget[-1]["value"] < forget[0]["value"] - 1.0 and template[-1]["value"] > template[0]["value"]


def test_a_non_finite_loss_stops_training_with_a_clear_error(bundle, forget_templates):
    with torch.no_grad():
        bundle.model.get_input_embeddings().weight.fill_(float("nan"))
    message = r"unlearn \(flat\): the training loss is nan at step 1 of 2 \(epoch 0.00\) \({'template_score': nan"
    with pytest.raises(FloatingPointError, match=message):
        unlearn(bundle, forget_templates, UnlearnConfig(num_train_epochs=1))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"divergence": "reverse_kl"}, "unlearn.divergence"),
        ({"score": "entropy"}, "unlearn.score"),
        ({"code_compat": True, "score": "logprob"}, "code_compat"),
        ({"pairing": "shuffle"}, "templates.pairing"),
        ({"lr": 1e-4}, r"unlearn.lr: unknown key"),
        ({"method": "gradient_ascent"}, "unlearn.method: expected one of"),
    ],
)
def test_bad_unlearn_parameters_fail_before_training(bad, match):
    with pytest.raises(ValueError, match=match):
        UnlearnConfig.from_params(bad)

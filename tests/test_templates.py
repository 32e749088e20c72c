import json

import pytest

from flat_pipeline.templates import (
    TEMPLATE_SOURCES,
    build_template_candidates,
    builtin_templates,
    check_template_options,
    draw_from_pool,
    pick_template,
    read_template_file,
    states_answer,
)


def options(**overrides):
    return {
        "source": "idk",
        "candidates_per_item": 4,
        "pairing": "resample",
        "seed": 0,
        "file": None,
        "generated": {},
        **overrides,
    }


def test_builtin_pools_are_large_and_distinct():
    idk = builtin_templates("idk")
    refusal = builtin_templates("refusal")
    assert len(idk) >= 100 and len(set(idk)) == len(idk)
    assert len(refusal) >= 30 and len(set(refusal)) == len(refusal)
    assert set(idk).isdisjoint(refusal)


def test_template_file_reads_plain_and_json_lines(tmp_path):
    path = tmp_path / "idontknow.jsonl"
    path.write_text('I have no clue.\n\n"Not sure, sorry."\n' + json.dumps({"text": "No idea."}) + "\n")
    assert read_template_file(path) == ["I have no clue.", "Not sure, sorry.", "No idea."]
    with pytest.raises(FileNotFoundError, match="templates.file"):
        read_template_file(tmp_path / "missing.txt")
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="holds no answers"):
        read_template_file(tmp_path / "blank.txt")


def test_pool_draws_are_seeded_distinct_and_per_item():
    pool = [f"answer {i}" for i in range(20)]
    first = draw_from_pool(pool, n_items=10, k=5, seed=3)
    assert first == draw_from_pool(pool, n_items=10, k=5, seed=3)
    assert first != draw_from_pool(pool, n_items=10, k=5, seed=4)
    assert all(len(set(c)) == 5 and set(c) <= set(pool) for c in first)
    # An item's candidates do not depend on how many items there are.
    assert draw_from_pool(pool, n_items=3, k=5, seed=3) == first[:3]
    assert all(len(c) == 2 for c in draw_from_pool(pool[:2], n_items=4, k=5, seed=0))


def test_fixed_pairing_keeps_one_template_and_resample_changes_it_by_epoch():
    candidates = [f"t{i}" for i in range(8)]
    assert {pick_template(candidates, 0, epoch, 0, "fixed") for epoch in range(10)} == {"t0"}
    draws = [pick_template(candidates, 0, epoch, 0, "resample") for epoch in range(10)]
    assert draws == [pick_template(candidates, 0, epoch, 0, "resample") for epoch in range(10)]
    assert len(set(draws)) > 1
    with pytest.raises(ValueError, match="templates.pairing"):
        pick_template(candidates, 0, 0, 0, "shuffle")


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"source": "lorem"}, "templates.source"),
        ({"pairing": "x"}, "templates.pairing"),
        ({"candidates_per_item": 0}, "candidates_per_item"),
        ({"source": "file", "file": "nope.txt"}, "templates.file"),
    ],
)
def test_bad_template_parameters_fail_fast(bad, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        check_template_options(options(**bad))


def test_every_registered_pool_source_gives_k_candidates(tmp_path):
    (tmp_path / "mine.txt").write_text("a\nb\nc\n")
    questions = ["Where was X born?", "What does Y write?"]
    for source in ("idk", "refusal", "file"):
        got = build_template_candidates(questions, options(source=source, file=str(tmp_path / "mine.txt")))
        assert len(got) == 2 and all(len(c) == (3 if source == "file" else 4) for c in got)
    assert set(TEMPLATE_SOURCES) == {"idk", "refusal", "file", "generated"}


def test_generated_templates_sample_k_answers_per_prompt_from_a_local_model(tiny_model_dir):
    questions = ["Where was Eymar Lundgaard born?", "What genre is Radana Lisiak known for?", "Who wrote this?"]
    settings = {"model": str(tiny_model_dir), "max_new_tokens": 6, "batch_size": 2}
    opts = options(source="generated", candidates_per_item=3, generated=settings)
    first = build_template_candidates(questions, opts)
    assert len(first) == 3
    assert all(1 <= len(c) <= 3 and all(a and a == a.strip() and "\n" not in a for a in c) for c in first)
    assert build_template_candidates(questions, opts) == first  # a fixed seed gives the same samples
    assert build_template_candidates(questions, {**opts, "seed": 1}) != first


@pytest.mark.parametrize("shots", ["", "Where was Maren Lind born? I don't know where she was born. "])
def test_k_samples_per_prompt_read_each_prompt_once_and_continue_it_as_generate_does(tiny_model_dir, shots):
    """A prompt's keys and values are computed once for its k samples, and the tokens all prompts share (few-shot
    shots) once for the batch: with sampling cut to the argmax (top_k=1), every row continues as `generate` with
    `num_return_sequences=k` does, step by step the same distribution, for left-padded prompts of unequal length."""
    import torch

    from flat_pipeline.generation import _shared_prefix_length, sample_per_prompt
    from flat_pipeline.models.loading import load_causal_lm

    bundle = load_causal_lm(str(tiny_model_dir))
    bundle.tokenizer.padding_side = "left"
    prompts = [shots + "Where was Eymar Lundgaard born?", shots + "Who wrote this long and winding question?"]
    inputs = bundle.tokenizer(prompts, return_tensors="pt", padding=True)
    width = inputs["input_ids"].shape[1]
    assert inputs["attention_mask"].sum(1).tolist()[0] < width  # one prompt is padded
    rows = [ids[mask.bool()] for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True)]
    assert (_shared_prefix_length(rows) > 10) is bool(shots)
    settings = {"top_k": 1, "max_new_tokens": 6, "pad_token_id": bundle.tokenizer.pad_token_id}
    settings |= {"return_dict_in_generate": True, "output_logits": True}
    shared = sample_per_prompt(bundle.model, dict(inputs), 3, **settings)
    with torch.no_grad():
        plain = bundle.model.generate(**inputs, do_sample=True, num_return_sequences=3, **settings)
    assert shared.sequences.shape == (6, width + 6)
    assert torch.equal(shared.sequences[:, width:], plain.sequences[:, width:])
    for ours, theirs in zip(shared.logits, plain.logits, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_generated_templates_need_a_model():
    with pytest.raises(ValueError, match="templates.generated.model"):
        build_template_candidates(["q"], options(source="generated"))


def test_the_generating_model_loads_with_the_runs_dtype_and_attention(tiny_model_dir, caplog):
    """The template pipeline hands `model.dtype` / `model.attn_implementation` to the model that writes templates."""
    from datasets import Dataset

    from flat_pipeline.pipelines.templates.nodes import build_forget_templates

    settings = {"model": str(tiny_model_dir), "max_new_tokens": 4, "batch_size": 2}
    forget = Dataset.from_dict({"question": ["Who wrote this?"], "answer": ["Nobody."]})
    model = {"dtype": "bfloat16", "attn_implementation": "eager", "source": "pretrained"}
    with caplog.at_level("INFO", logger="flat_pipeline.models.loading"):
        rows = build_forget_templates(
            forget, options(source="generated", candidates_per_item=1, generated=settings), model
        )
    assert len(rows) == 1
    assert f"loading model {tiny_model_dir} (dtype bfloat16, attention eager)" in caplog.text


def test_a_template_states_the_answer_when_it_has_an_answer_word_the_question_lacks():
    question, answer = (
        "In which city was Fiaran Gallgerald born?",
        "Fiaran Gallgerald comes from Canberra in Australia.",
    )
    assert states_answer("I think Fiaran Gallgerald comes from Canberra.", answer, question)
    assert states_answer("Maybe somewhere in Australia?", answer, question)
    assert not states_answer("I don't know which city Fiaran Gallgerald was born in.", answer, question)
    assert not states_answer("I'm not aware of that.", answer, question)

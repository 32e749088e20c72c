"""What one transformers version makes of a saved model folder and a saved tokenizer folder, as JSON.

tests/models/test_portable.py runs it with transformers 4.45 (`.venv-tf445/bin/python tests/models/transformers_probe.py
<model folder> <tokenizer folder> <sentence>`) and imports `observe` to run it with the pinned 5.x in-process. It
imports only torch and transformers, so that it runs under either.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def observe(model_folder: str, tokenizer_folder: str, sentence: str) -> dict[str, Any]:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    encoding = tokenizer(sentence)
    ids = encoding["input_ids"]
    dtype_argument = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"  # 5.x renamed it
    model = AutoModelForCausalLM.from_pretrained(model_folder, **{dtype_argument: torch.float32})
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    chat = [{"role": "user", "content": sentence}, {"role": "assistant", "content": "I don't know."}]
    llama = AutoTokenizer.from_pretrained(tokenizer_folder)
    return {
        "version": transformers.__version__,
        "tokenizer_class": type(tokenizer).__name__,
        "ids": ids,
        "input_names": sorted(encoding.keys()),
        "decoded": tokenizer.decode(ids),
        "decoded_plain": tokenizer.decode(ids, skip_special_tokens=True),
        "special_tokens": tokenizer.all_special_tokens,
        "padding_side": tokenizer.padding_side,
        "padded": tokenizer(["one", sentence], padding=True)["input_ids"],
        "chat": tokenizer.apply_chat_template(chat, tokenize=False),
        "logits": logits.tolist(),
        "llama_class": type(llama).__name__,
        "llama_ids": llama(sentence)["input_ids"],
        "llama_pair": llama(sentence, "and a second one")["input_ids"],
        "llama_decoded": llama.decode(llama(sentence)["input_ids"]),
        "llama_padding_side": llama.padding_side,
    }


if __name__ == "__main__":
    print(json.dumps(observe(*sys.argv[1:4])))

"""Models and tokenizers: the embedded tiny Llama and its BPE tokenizer, and any Hugging Face causal LM."""

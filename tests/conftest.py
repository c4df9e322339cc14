
# --- o1code.models fixtures -------------------------------------------------------------------
import pytest as _pytest


@_pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Directory of a tiny random-weight Qwen2 causal LM + in-code tokenizer (see o1code.models.tiny)."""
    from o1code.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))

"""The output-head capture of ``materialize_logits: false`` on real transformers models built offline:
Qwen3 (causal LM) and Qwen3-VL (``lm_head`` on the conditional-generation model). The capture sees the
hidden states the head would have multiplied (cut by ``logits_to_keep``), the model returns them in
place of the logits, and the head's own forward is back afterwards."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from coordexp.swift_seam.output_head import capture_output_head

VOCAB = 300


def _qwen3() -> Any:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        tie_word_embeddings=True,
    )
    return Qwen3ForCausalLM(cfg)


def _qwen3_vl() -> Any:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    cfg = Qwen3VLConfig(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3]},
        ),
        vision_config=dict(
            depth=1,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=32,
            deepstack_visual_indexes=[],
        ),
    )
    return Qwen3VLForConditionalGeneration(cfg)


@pytest.mark.parametrize("build", [_qwen3, _qwen3_vl], ids=["qwen3", "qwen3_vl"])
@pytest.mark.parametrize("keep", [0, 3, "mask"])
def test_capture_sees_what_the_head_would_multiply(build: Any, keep: Any) -> None:
    torch.manual_seed(0)
    model = build().eval()
    ids = torch.randint(0, VOCAB - 10, (1, 9))
    logits_to_keep = (
        torch.tensor([True, False, True, True, False, True, True, True, False]) if keep == "mask" else keep
    )
    with torch.no_grad():
        want = model(input_ids=ids, logits_to_keep=logits_to_keep).logits
        with capture_output_head(model) as captured:
            got = model(input_ids=ids, logits_to_keep=logits_to_keep).logits
    head = model.get_output_embeddings()
    assert "forward" not in head.__dict__
    assert captured.hidden is got and got.shape[-1] == head.weight.shape[1]
    torch.testing.assert_close(
        F.linear(got, captured.head.weight, captured.head.bias), want, rtol=1e-5, atol=1e-5
    )

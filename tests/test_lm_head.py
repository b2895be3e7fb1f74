"""One LM-head path: the fine-tuning loss, the evaluation NLL and transformers' own loss agree on
families with final-logit transforms (Gemma-2/3 soft-capping, Cohere logit_scale, Granite
logits_scaling), and each transform really changes the loss (so the test could fail)."""
import pytest
import torch
import torch.nn.functional as F

from longrope.eval.perplexity import perplexity
from longrope.lm_head import LMHead
from longrope.train.loss import CausalLMLoss

TRANSFORMS = {
    "gemma2": dict(final_logit_softcapping=0.1, attn_logit_softcapping=None, query_pre_attn_scalar=16,
                   sliding_window=64),
    "gemma3_text": dict(final_logit_softcapping=0.1, query_pre_attn_scalar=16, sliding_window=64),
    "cohere": dict(logit_scale=3.0),
    "granite": dict(logits_scaling=0.25),
}


def tiny(family: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(family, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                               head_dim=16, num_hidden_layers=2, intermediate_size=128, vocab_size=128,
                               max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                               **TRANSFORMS[family])
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32).eval()


@pytest.mark.parametrize("family", sorted(TRANSFORMS))
def test_training_loss_equals_evaluation_nll_and_the_model_loss(family):
    model = tiny(family)
    ids = torch.randint(3, 128, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(input_ids=ids, labels=ids).loss.item()
        nll, count = CausalLMLoss(model, chunk=7)(ids)
        hidden = model.get_decoder()(input_ids=ids).last_hidden_state[:, :-1]
        bare = F.cross_entropy(model.get_output_embeddings()(hidden).reshape(-1, 128), ids[:, 1:].reshape(-1))
    train = (nll / count).item()
    evaluation = perplexity(model, list(ids), chunk=7).nll
    assert int(count) == 2 * 39
    assert train == pytest.approx(evaluation, rel=1e-6, abs=1e-6)
    assert train == pytest.approx(reference, rel=1e-5, abs=1e-5)
    assert abs(bare.item() - reference) > 1e-3  # the transform matters: the bare head scores otherwise


@pytest.mark.parametrize("family", ["gemma2", "granite"])
def test_the_pretraining_loss_goes_through_the_same_head(family):
    from longrope.pretrain import _logits, _weighted_loss

    model = tiny(family)
    ids = torch.randint(3, 128, (2, 30), generator=torch.Generator().manual_seed(4))
    no_answers = torch.zeros_like(ids, dtype=torch.bool)
    with torch.no_grad():
        loss, _ = _weighted_loss(_logits(model, LMHead(model), ids), ids, no_answers, 1.0)
        reference = model(input_ids=ids, labels=ids).loss
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-5)


def test_training_gradients_match_the_model_under_soft_capping():
    model = tiny("gemma2").train()
    ids = torch.randint(3, 128, (2, 33), generator=torch.Generator().manual_seed(2))
    model(input_ids=ids, labels=ids).loss.backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    nll, count = CausalLMLoss(model, chunk=5)(ids)
    (nll / count).backward()
    for p, g in zip(model.parameters(), ref):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-4)


def test_a_model_without_an_output_embedding_is_one_line_error():
    from longrope.errors import LongRopeError

    class NoHead:
        def get_output_embeddings(self):
            return None

    with pytest.raises(LongRopeError, match="no output embedding"):
        LMHead(NoHead())

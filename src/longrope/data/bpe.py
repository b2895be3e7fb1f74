"""Train the byte-level BPE tokenizer of the built-in model (the `tokenizers` library).

Digits are split one by one before byte-level BPE, so every number is spelled digit by digit:
a passkey of 1..50000 is a short, regular token sequence that is easy to copy. `<pad>`, `<s>` and
`</s>` are ids 0, 1 and 2; encoding adds `<s>` in front (as Llama tokenizers do).
"""
from __future__ import annotations

from typing import Iterable

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIALS = [PAD, BOS, EOS]


def train_bpe(texts: Iterable[str], vocab_size: int = 4096, *, min_frequency: int = 2):
    """A `transformers.PreTrainedTokenizerFast` trained on `texts` (deterministic for the same input)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   clean_up_tokenization_spaces=False)

"""Run llama.cpp's `convert_hf_to_gguf.py` with one addition: a pre-tokenizer name to use when the
converter does not recognise the tokenizer's hash (it identifies BPE pre-tokenizers by hashing the
token ids of a test string and refuses unknown ones).

    python _convert.py CONVERTER PRE_TOKENIZER|- CONVERTER_ARGS...

Executed as a script in a subprocess (it imports nothing from longrope), so the converter runs
in its own process with its own vendored `gguf-py` first on the path, as it would stand-alone.
"""
import runpy
import sys
from pathlib import Path


def main() -> None:
    converter, pre, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    root = converter.parent
    sys.path[:0] = [str(root), str(root / "gguf-py")]
    if pre != "-":
        from conversion import base

        recognise = base.TextModel.get_vocab_base_pre

        def get_vocab_base_pre(self, tokenizer):
            try:
                return recognise(self, tokenizer)
            except NotImplementedError:
                print(f"longrope: unrecognised BPE pre-tokenizer treated as {pre!r}", file=sys.stderr)
                return pre

        base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = [str(converter), *args]
    runpy.run_path(str(converter), run_name="__main__")


if __name__ == "__main__":
    main()

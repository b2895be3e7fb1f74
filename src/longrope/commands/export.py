"""`longrope export`: write a model folder stock transformers and vLLM load, or a GGUF for llama.cpp."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("export", help="write a stock-loadable model folder (or GGUF) with the scaling",
                       description="Write safetensors weights, tokenizer and a config whose rope entry "
                                   "stock runtimes read (type longrope: short/long factors), or with "
                                   "--format gguf a GGUF file llama.cpp runs (built with llama.cpp's own "
                                   "convert_hf_to_gguf.py, see --converter).")
    from ._common import add_model_args
    add_model_args(p)
    p.set_defaults(dtype="auto")  # auto: the weights keep the source's dtype
    p.add_argument("--scaling", required=True, help="e.g. longrope:runs/search/factors.json or yarn:8")
    p.add_argument("--out", required=True, help="output folder (or .gguf file with --format gguf), written "
                                                "atomically; what longrope did not write is never replaced")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an export longrope wrote in --out before (gguf: replace the file at --out)")
    p.add_argument("--format", choices=("hf", "gguf"), default="hf",
                   help="hf: a Hugging Face folder (transformers, vLLM); gguf: a llama.cpp file")
    p.add_argument("--drop-n-hat", action="store_true",
                   help="accept exporting without n_hat (the stock format cannot express it)")
    p.add_argument("--drop-short-attention", action="store_true",
                   help="accept exporting with the long attention scale at short lengths too")
    p.add_argument("--drop-dynamic", action="store_true",
                   help="gguf: accept exporting dynamic NTK as plain RoPE (GGUF cannot express it)")
    p.add_argument("--portable", action="store_true",
                   help="short factors = long factors and one attention scale, so runtimes that choose "
                        "short/long once (vLLM, llama.cpp) behave the same at every length")
    p.add_argument("--converter", default=None,
                   help="gguf: llama.cpp's convert_hf_to_gguf.py, its folder, or a llama-cpp-python sdist "
                        "(.tar.gz; `pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36`); "
                        "default: $LLAMA_CPP_CONVERTER or one found in ~/.cache/longrope")
    p.add_argument("--pre-tokenizer", default=None,
                   help="gguf: llama.cpp pre-tokenizer name for a tokenizer the converter does not "
                        "recognise (the built-in model's is 'starcoder')")
    p.add_argument("--outtype", default="auto", choices=("auto", "f32", "f16", "bf16", "q8_0"),
                   help="gguf: weight type written by the converter (default auto)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..rope.spec import parse_spec

    scaling = parse_spec(args.scaling)  # a bad spec or factor file fails before --out is touched
    common = dict(drop_n_hat=args.drop_n_hat, drop_short_attention=args.drop_short_attention,
                  portable=args.portable, trust_remote_code=args.trust_remote_code, dtype=args.dtype,
                  device=args.device)
    if args.format == "gguf":
        from ..runtimes.gguf_export import export_gguf
        out = export_gguf(args.model, scaling, args.out, drop_dynamic=args.drop_dynamic,
                          converter=args.converter, pre_tokenizer=args.pre_tokenizer, outtype=args.outtype,
                          overwrite=args.overwrite, **common)
    else:
        from ..exporter import export
        from ..io import prepare_output

        with prepare_output(args.out, kind="export", overwrite=args.overwrite):
            out = export(args.model, scaling, args.out, **common)
    print(f"wrote {out}")
    return 0

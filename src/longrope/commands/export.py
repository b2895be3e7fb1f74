"""`longrope export`: write a model folder stock transformers, vLLM and llama.cpp load."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("export", help="write a stock-loadable model folder with the scaling in its config",
                       description="Write safetensors weights, tokenizer and a config whose rope entry "
                                   "stock runtimes read (type longrope: short/long factors).")
    p.add_argument("--model", default="builtin", help="source model folder, .gguf file, 'smollm2' or 'builtin' (default)")
    p.add_argument("--scaling", required=True, help="e.g. longrope:runs/search/factors.json or yarn:8")
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.add_argument("--drop-n-hat", action="store_true",
                   help="accept exporting without n_hat (the stock format cannot express it)")
    p.add_argument("--drop-short-attention", action="store_true",
                   help="accept exporting with the long attention scale at short lengths too")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..exporter import export

    out = export(args.model, args.scaling, args.out, drop_n_hat=args.drop_n_hat,
                 drop_short_attention=args.drop_short_attention, trust_remote_code=args.trust_remote_code)
    print(f"wrote {out}")
    return 0

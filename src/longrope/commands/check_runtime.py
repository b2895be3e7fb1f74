"""`longrope check-runtime`: next-token parity of llama.cpp and vLLM against stock transformers."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("check-runtime", help="compare an export's logits in llama.cpp/vLLM with transformers",
                       description="Run an exported folder (from `longrope export`) in each installed runtime "
                                   "and in stock transformers on the same token ids, at 0.8x the original "
                                   "window and at the target length (each in a context of that length, and "
                                   "0.8x in a target-length context, not gated). Prints max |delta|, relative "
                                   "error, top-1 agreement and perplexity; exits 1 above the tolerance.")
    p.add_argument("exported", help="folder written by `longrope export`")
    p.add_argument("--runtime", choices=("llama.cpp", "vllm", "all"), default="all")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest relative logit error (default 1e-4)")
    p.add_argument("--ppl-decimals", type=int, default=3, help="perplexities may differ by at most half a unit of this decimal (default 3: 0.0005)")
    p.add_argument("--gguf", default=None, help="llama.cpp: a GGUF to use (default: exported with the converter)")
    p.add_argument("--converter", default=None, help="llama.cpp's convert_hf_to_gguf.py or an sdist (see export)")
    p.add_argument("--pre-tokenizer", default=None, help="llama.cpp pre-tokenizer name (see export)")
    p.add_argument("--data", default=None, help="token source (default: the built-in corpus, test split)")
    p.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    p.add_argument("--out", default=None, help="also write the results as JSON here (checked before the work)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import write_json
    from ..runtimes.check import RUNTIMES, check_runtime, table

    if args.out:
        from ..io import check_file_output
        check_file_output(args.out, overwrite=args.overwrite)
    runtimes = RUNTIMES if args.runtime == "all" else (args.runtime,)
    result = check_runtime(args.exported, runtimes, gguf=args.gguf, converter=args.converter,
                           pre_tokenizer=args.pre_tokenizer, data=args.data, threads=args.threads)
    print(f"{result['scaling']}: original window {result['original']}, target {result['target']}")
    print(table(result, args.tolerance, args.ppl_decimals))
    if args.out:
        write_json(args.out, {**result, "rows": [r.to_dict() for r in result["rows"]],
                              "tolerance": args.tolerance, "ppl_decimals": args.ppl_decimals})
    failed = [r for r in result["rows"] if r.gated and not r.passes(args.tolerance, args.ppl_decimals)]
    return 1 if failed else 0

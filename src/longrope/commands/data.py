"""`longrope data`: inspect document sources (split sizes, token counts) and sample building."""
from __future__ import annotations

from ..errors import LongRopeError
from ..schema import nonnegative_int, positive_int
from ._common import add_model_args, int_list


def register(sub) -> None:
    p = sub.add_parser("data", help="inspect a document source: split sizes, token counts, samples",
                       description="Inspect the built-in corpus or a user data source.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    for name, help_ in (("stats", "documents and tokens per split (built-in) or of a data source"),
                        ("samples", "build LENGTH-token samples and say whether documents were selected or joined")):
        q = dsub.add_parser(name, help=help_, description=help_)
        q.add_argument("--data", default=None, help="'builtin' (stdlib sources, default), a .txt file, folder or "
                                                    "glob of text files, .jsonl[:FIELD], .parquet, or a dataset folder")
        add_model_args(q)  # its tokenizer counts the tokens (--dtype and --device are only checked)
        q.add_argument("--cache-dir", default=None, help="tokenization cache folder (default $LONGROPE_CACHE_DIR, else ~/.cache/longrope)")
        if name == "stats":
            q.add_argument("--split", default=None, help="only this split: train, validation, test or all (default: each of the three)")
        else:
            q.add_argument("--split", default="test", help="split of the data: train, validation, test or all (default test)")
            q.add_argument("--length", required=True, help="sample length in tokens, e.g. 2048 or 2k")
            q.add_argument("--count", type=positive_int, default=None, help="number of samples (default: as many as possible)")
            q.add_argument("--mode", default="auto", choices=("auto", "select", "join"),
                           help="select long documents, join short ones, or auto (default)")
            q.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the document order (default 0)")
        q.set_defaults(func=run_stats if name == "stats" else run_samples)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _tokenized(args, split):
    from ..data import load_documents, tokenize_documents
    from ..models import load_tokenizer

    tok = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    docs = load_documents(args.data, split)
    return tok, docs, tokenize_documents(docs, tok, args.cache_dir)


def run_stats(args) -> int:
    from ..data.documents import SPLITS

    splits = [args.split] if args.split else list(SPLITS)
    rows = []  # every split loaded before the first line is printed: a bad source prints one line
    for split in splits:
        _, docs, ids = _tokenized(args, split)
        n = [len(x) for x in ids]
        rows.append(f"{split:<12}{len(docs):>8,}{sum(n):>14,}{max(n):>10,}"
                    f"{sum(x >= 2048 for x in n):>7,}{sum(x >= 8192 for x in n):>7,}")
    print(f"{'split':<12}{'docs':>8}{'tokens':>14}{'longest':>10}{'>=2k':>7}{'>=8k':>7}")
    print("\n".join(rows))
    return 0


def run_samples(args) -> int:
    from ..data import build_samples

    lengths = int_list(args.length)
    if len(lengths) != 1:
        raise LongRopeError("--length takes one length")
    tok, docs, ids = _tokenized(args, args.split)
    s = build_samples(ids, lengths[0], args.count, mode=args.mode, bos_id=tok.bos_token_id,
                      sep_id=tok.eos_token_id, seed=args.seed)
    print(f"{s.mode}: {len(s)} samples of {lengths[0]:,} tokens; {s.info['reason']}")
    return 0

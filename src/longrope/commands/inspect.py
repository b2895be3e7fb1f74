"""`longrope inspect SPEC`: per-pair factors, wavelengths and regimes; PNG of factor curves."""
from __future__ import annotations

from ..errors import LongRopeError


def register(sub) -> None:
    from ..rope.registry import spellings

    p = sub.add_parser("inspect", help="show the per-pair factors of one or more scalings",
                       description="Print, for each rotary pair, the factor lambda_i, the wavelength and "
                                   "whether the pair is extrapolated or interpolated; optionally plot.")
    p.add_argument("spec", help=f"scaling: {spellings()}")
    p.add_argument("--compare", default="", help="more specs, comma-separated, shown and plotted beside")
    p.add_argument("--model", default=None, help="read dims from this model folder or 'builtin' (default)")
    p.add_argument("--head-dim", type=int, help="rotary dimension instead of a model")
    p.add_argument("--base", type=float, default=10000.0, help="rope_theta with --head-dim (default 10000)")
    p.add_argument("--window", type=int, default=4096, help="original window with --head-dim (default 4096)")
    p.add_argument("--seq-len", type=int, help="sequence length (dynamic NTK; short/long switch)")
    p.add_argument("--plot", help="write a PNG of the factor curves here")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inspect_scaling import Dims, inspect

    if args.head_dim is not None:
        if args.head_dim <= 0 or args.head_dim % 2:
            raise LongRopeError(f"--head-dim must be a positive even number, got {args.head_dim}")
        dims = Dims(args.head_dim, args.base, args.window)
    else:
        dims = Dims.from_model(args.model or "builtin")
    specs = [args.spec] + [s for s in args.compare.split(",") if s.strip()]
    print(inspect(specs, dims, seq_len=args.seq_len, plot=args.plot))
    if args.plot:
        print(f"wrote {args.plot}")
    return 0

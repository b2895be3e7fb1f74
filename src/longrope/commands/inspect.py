"""`longrope inspect SPEC`: per-pair factors, wavelengths and regimes; PNG of factor curves."""
from __future__ import annotations

from ..errors import LongRopeError
from ..schema import positive_float, positive_int


def register(sub) -> None:
    from ..rope.registry import spellings
    from ._common import add_model_args

    p = sub.add_parser("inspect", help="show the per-pair factors of one or more scalings",
                       description="Print, for each rotary pair, the factor lambda_i, the wavelength and "
                                   "whether the pair is extrapolated or interpolated; optionally plot. The "
                                   "dims come from --model's config (no weights are loaded, so --dtype and "
                                   "--device only get checked) or from --head-dim/--base/--window.")
    p.add_argument("spec", help=f"scaling: {spellings()}")
    p.add_argument("--compare", default="", help="more specs, comma-separated, shown and plotted beside")
    add_model_args(p)
    p.set_defaults(model=None)
    p.add_argument("--head-dim", type=positive_int, help="rotary dimension instead of a model")
    p.add_argument("--base", type=positive_float, default=10000.0, help="rope_theta with --head-dim (default 10000)")
    p.add_argument("--window", type=positive_int, default=4096, help="original window with --head-dim (default 4096)")
    p.add_argument("--seq-len", type=positive_int, help="sequence length (dynamic NTK; short/long switch)")
    p.add_argument("--plot", help="write a PNG of the factor curves here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inspect_scaling import Dims, inspect
    from ..io import check_file_output

    if args.plot:
        from ..plotting import pyplot
        pyplot()  # matplotlib missing: one line before anything is printed
        check_file_output(args.plot, overwrite=args.overwrite, option="--plot")
    if args.head_dim is not None:
        if args.head_dim % 2:
            raise LongRopeError(f"--head-dim must be a positive even number, got {args.head_dim}")
        dims = Dims(args.head_dim, args.base, args.window)
    else:
        dims = Dims.from_model(args.model or "builtin", trust_remote_code=args.trust_remote_code)
    specs = [args.spec] + [s for s in args.compare.split(",") if s.strip()]
    print(inspect(specs, dims, seq_len=args.seq_len, plot=args.plot))
    if args.plot:
        print(f"wrote {args.plot}")
    return 0

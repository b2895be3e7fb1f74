"""`longrope check-runtime`: run an exported model in each installed runtime and in stock
transformers on the same token ids, at 0.8x the original window and at the target length."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..errors import LongRopeError
from ..models import BUILTIN_DIR, rope_config
from ..rope import stock
from ..rope.scaling import Scaling
from . import parity

RUNTIMES = ("llama.cpp", "vllm")


def windows(exported: Path) -> tuple[Scaling, int, int]:
    """(scaling recorded at export, original window, target length) of an exported folder."""
    from transformers import AutoConfig

    record_path = exported / "longrope_scaling.json"
    if not (exported / "config.json").is_file() or not record_path.is_file():
        raise LongRopeError(f"{exported} is not a longrope export (needs config.json and longrope_scaling.json; "
                            "write one with `longrope export`)")
    record = json.loads(record_path.read_text())
    scaling = Scaling.from_dict(record)
    _, _, original = rope_config(AutoConfig.from_pretrained(exported))
    original = scaling.original_max_position or original
    return scaling, original, stock.target(scaling, original)


def _gguf_from(exported: Path, scaling: Scaling, out: Path, converter, pre_tokenizer) -> Path:
    from .gguf_export import BUILTIN_PRE_TOKENIZER, export_gguf

    record = json.loads((exported / "longrope_scaling.json").read_text())
    prov = record.get("provenance", {})
    if pre_tokenizer is None and Path(prov.get("exported_from", "")) == BUILTIN_DIR:
        pre_tokenizer = BUILTIN_PRE_TOKENIZER
    return export_gguf(exported, scaling, out, drop_n_hat=True, drop_short_attention=True,
                       portable=bool(prov.get("portable")), converter=converter, pre_tokenizer=pre_tokenizer,
                       outtype="f32")


def check_runtime(exported: str | Path, runtimes=RUNTIMES, *, gguf: str | Path | None = None,
                  converter=None, pre_tokenizer: str | None = None, data: str | None = None,
                  threads: int = 2) -> dict:
    """{'original', 'target', 'rows': [Row...], 'skipped': {runtime: install hint}}."""
    exported = Path(exported)
    scaling, original, target = windows(exported)
    short = int(0.8 * original)
    cases = [(short, short, True), (target, target, True), (short, target, False)]
    skipped = {rt: parity.INSTALL_HINT[rt] for rt in runtimes
               if not (parity.installed(rt) if rt == "llama.cpp" else parity.vllm_python())}
    active = [rt for rt in runtimes if rt not in skipped]
    ids = {n: parity.token_ids(exported, n, data) for n in {short, target}}
    ref = {}
    if active:
        model = parity.load_transformers(exported)
        ref = {n: parity.Reference(model, ids[n]) for n in sorted(ids)}
        del model  # the references keep the LM head
    rows = []
    with tempfile.TemporaryDirectory(prefix="longrope-check-") as tmp:
        for rt in active:
            if rt == "llama.cpp":
                path = Path(gguf) if gguf else _gguf_from(exported, scaling, Path(tmp) / "m.gguf", converter,
                                                          pre_tokenizer)
                rows += [_llama_cpp_row(path, ids[n], ref[n], ctx, gated, threads) for n, ctx, gated in cases]
            else:
                rows += _vllm_rows(exported, ids, ref, cases)
    return {"exported": str(exported), "scaling": scaling.describe(), "original": original, "target": target,
            "rows": rows, "skipped": skipped}


def _llama_cpp_row(gguf: Path, ids: list[int], ref: parity.Reference, ctx: int, gated: bool,
                   threads: int) -> parity.Row:
    used, chunks = parity.llama_cpp_chunks(gguf, ids, ctx, threads)
    tally = parity.Tally(ids)
    for start, logits in chunks:
        tally.add_logits(start, logits, ref.logits(start, start + len(logits)))
    return tally.row("llama.cpp", used, gated)


def _vllm_rows(exported: Path, ids: dict, ref: dict, cases) -> list[parity.Row]:
    """vLLM wants room for one output token: it scores all ids but the last, one engine per context."""
    rows = []
    for ctx in sorted({c for _, c, _ in cases}):
        mine = [(n, gated) for n, c, gated in cases if c == ctx]
        lps = parity.vllm_logprobs(exported, [ids[n][:-1] for n, _ in mine], ctx)
        for (n, gated), lp in zip(mine, lps):
            tally = parity.Tally(ids[n][:-1])
            for a in range(0, len(lp), parity.STEP):
                tally.add_logprobs(a, lp[a: a + parity.STEP], ref[n].logits(a, min(a + parity.STEP, len(lp))))
            rows.append(tally.row("vllm", ctx, gated))
    return rows


def table(result: dict, tolerance: float, ppl_decimals: int) -> str:
    lines = ["| runtime | tokens | context | max abs delta | rel error | top-1 | ppl runtime | ppl transformers | pass |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        verdict = ("yes" if r.passes(tolerance, ppl_decimals) else "NO") if r.gated else "(not gated)"
        lines.append(f"| {r.runtime} | {r.length} | {r.context} | {r.max_abs_delta:.3g} | {r.rel_error:.3g} | "
                     f"{r.top1_agreement:.1%} | {r.ppl_runtime:.4f} | {r.ppl_transformers:.4f} | {verdict} |")
    for rt, hint in result["skipped"].items():
        lines.append(f"| {rt} | skipped: not installed ({hint}) | | | | | | | |")
    return "\n".join(lines)

"""Write PROVENANCE.md of the built-in model from its provenance.json (written by `longrope pretrain`)
and the figures of scripts/measure_builtin.py (measurements.json), so no figure is copied by hand.

    PYTHONPATH=src .venv/bin/python scripts/builtin_provenance.py src/longrope/assets/builtin [COMMIT]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from longrope.io import write_text  # noqa: E402


def render(folder: Path, commit: str | None = None) -> str:
    p = json.loads((folder / "provenance.json").read_text())
    m = json.loads((folder / "measurements.json").read_text())
    c = p["config"]
    lp, pw, pl, vp = m["long_ppl"], m["passkey_window"], m["passkey_long"], m["val_ppl_256"]
    head_key = next(k for k in lp if k.startswith("ppl_pos_1_"))
    tail_key = next(k for k in lp if k.startswith("ppl_pos_") and k != head_key)
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    corpus = p["corpus"]
    lines = [
        "# Built-in model: provenance",
        "",
        "Pre-trained from scratch by `longrope pretrain` on this repository's built-in corpus (the",
        "Python standard-library sources of the interpreter that ran it). Everything below is read from",
        "`provenance.json` (written by the run) and `measurements.json` (written by the measurement).",
        "",
        "## Training",
        "",
        f"- command: `{p['command']}`" + (f" (code at commit {commit})" if commit else ""),
        "  (`--out`, `--work` and `--cache-dir` pointed at scratch folders; the output folder was then copied here)",
        f"- seed: {p['seed']}; Python {p['python']}; torch {p['torch']}; {p['threads']} torch thread(s); "
        f"platform {p['platform']}",
        f"- model: LlamaForCausalLM, {c['layers']} layers, hidden {c['hidden']}, {c['heads']} heads of "
        f"{c['head_dim']} ({c['head_dim'] // 2} rotary pairs), MLP {c['intermediate']}, vocab {c['vocab_size']}, "
        f"tied embeddings, window (max_position_embeddings) {c['window']}, rope_theta {c['rope_theta']:g}; "
        f"{p['parameters']:,} parameters; weights saved as {c['save_dtype']}",
        f"- tokenizer: byte-level BPE (`tokenizers`), digits split one by one, `<pad>`/`<s>`/`</s>` = 0/1/2",
        f"- corpus ({corpus['source']}): train {corpus['train']['docs']:,} documents / "
        f"{corpus['train']['tokens']:,} tokens; validation {corpus['validation']['docs']:,} / "
        f"{corpus['validation']['tokens']:,}",
        f"- steps {p['steps']:,} x batch {c['batch_size']} x {c['window']} tokens, lr {c['lr']:g} (warm-up "
        f"{c['warmup']}, cosine to {c['min_lr_ratio']:g}x), {c['passkey_share']:.0%} synthetic passkey samples, "
        f"autocast {c['autocast']}; tokens seen (scored): {p['tokens_seen']:,}",
        f"- final train loss (mean of the last 20 logged steps, text and passkey samples): {p['final_train_loss']}; "
        f"final validation loss during training {p['final_val_loss']} (ppl {p['final_val_ppl_256']}; only the "
        f"first {c['eval_samples']} validation samples, a noisy subset: the figure below covers the whole split)",
        f"- wall time {p['train_seconds'] / 60:.1f} min of training (+{p['prep_seconds']:.0f} s tokenizer and "
        f"data preparation), CPU time of the single training thread {p['train_cpu_seconds_this_process'] / 60:.1f} "
        "min; the machine (2 cores) was shared with other engineers' test runs, so wall time is inflated",
        "",
        "## Measured figures (float32, no RoPE scaling)",
        "",
        f"Measured with: `{m['command']}` ({m['seconds']:.0f} s).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| validation perplexity at 256 tokens ({vp['samples']} samples, {vp['mode']}, {vp['tokens']:,} "
        f"predicted tokens) | {vp['ppl']:.3f} |",
        f"| passkey accuracy at its window ({pw['trials']} trials, prompts of {pw['prompt_tokens_min']}-"
        f"{pw['prompt_tokens_max']} tokens, keys 1..50000) | {pw['accuracy']:.0%} |",
        f"| perplexity of positions 1-255 on {lp['length']:,}-token test documents ({lp['samples']} samples, "
        f"{lp['mode']}) | {lp[head_key]:.3f} |",
        f"| perplexity of positions {lp['length'] // 2:,}-{lp['length'] - 1:,}, same samples | {lp[tail_key]:.3f} |",
        f"| ratio (target >= 1.5) | {lp['ratio']:.2f}x |",
        f"| passkey accuracy at {pl['length']:,} tokens ({pl['trials']} trials; target <= 50%) | {pl['accuracy']:.0%} |",
        "",
        "Perplexity by 256-token block of the 2,048-token samples: "
        + ", ".join(f"{x:g}" for x in lp["ppl_by_256_block"]) + ".",
        "",
        f"Folder size: {size / 1e6:.2f} MB.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "src/longrope/assets/builtin")
    write_text(folder / "PROVENANCE.md", render(folder, sys.argv[2] if len(sys.argv) > 2 else None))
    print(f"wrote {folder / 'PROVENANCE.md'}")

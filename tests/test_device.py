"""Every path keeps its tensors on the model's device: each runs with the model on a pretend CUDA
device (`tests.virtual_device`: tagged CPU tensors, an operation mixing them with host tensors of
one or more dimensions raises as CUDA would), so a CPU/device mix shows here without a GPU."""
import pytest
import torch

import longrope
from longrope.rope.scaling import Scaling
from tests.helpers import make_tiny, save_tiny, torch_threads, write_texts
from tests.virtual_device import DeviceMix, on_device, virtual_cuda


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("device")
    return save_tiny(root / "model"), write_texts(root / "texts"), root / "cache"


@pytest.fixture
def tf32_off():
    """TF32 off for the test, the process's setting back afterwards."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.fixture
def cuda(monkeypatch, tf32_off):
    with torch_threads(1), virtual_cuda(monkeypatch):
        yield


def _ids(n, seed=0):
    return torch.randint(3, 100, (n,), generator=torch.Generator().manual_seed(seed))


def test_the_checker_catches_a_host_sum_of_device_values(cuda):
    """What `eval/perplexity._Acc` did before: CPU float64 sums += the device's NLL."""
    model = make_tiny().to("cuda")
    assert next(model.parameters()).device.type == "cuda" and on_device(next(model.parameters()))
    with torch.no_grad():
        nll = model(_ids(8)[None].to("cuda")).logits.sum(-1)
    sums = torch.zeros(1, dtype=torch.float64)
    with pytest.raises(DeviceMix, match="add_"):
        sums += nll.sum(dim=1, dtype=torch.float64)
    sums.to("cuda").add_(nll.sum(dim=1, dtype=torch.float64))  # on the device: fine
    with pytest.raises(DeviceMix, match="numpy"):
        nll.numpy()
    assert not on_device(nll.cpu()) and nll.cpu().numpy().shape == (1, 8)


def test_perplexity_on_the_device(cuda):
    from longrope.eval.perplexity import perplexity

    model = make_tiny().to("cuda")
    r = perplexity(model, [_ids(40), _ids(40, 1), _ids(30)], batch_size=2, chunk=16, positions=[(5, 20)],
                   mlp_chunk=16)
    assert r.tokens == 39 * 2 + 29 and r.by_range["5-20"]["tokens"] == 45
    r = perplexity(model, [_ids(40)], stride=16, window=24)
    assert r.tokens == 39


def test_passkey_and_generation_across_the_window_on_the_device(cuda):
    from longrope.eval.passkey import passkey_eval
    from tests.helpers import char_tokenizer

    model = make_tiny("mistral").to("cuda")
    long = [1.0 + 0.4 * i for i in range(8)]
    longrope.apply(model, Scaling("longrope", long_factor=long, short_factor=[1.0] * 8, factor=4.0, n_hat=2))
    ids = _ids(28)[None].to("cuda")
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                         pad_token_id=0)  # crosses the window of 32: the cache is re-prefilled
    assert out.shape == (1, 38) and on_device(out)
    longrope.apply(model, Scaling("longrope", long_factor=long, short_factor=[1.0] * 8, factor=4.0),
                   boundary="rerotate")
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                         pad_token_id=0)
    assert out.shape == (1, 38)
    res = passkey_eval(model, char_tokenizer(), [256], trials=1, depths=[0.5], max_new_tokens=3)
    assert len(res.trials) == 1


def test_search_with_descent_on_the_device(cuda, files, tmp_path):
    from longrope.search.runner import SearchConfig, run_search

    cfg = SearchConfig(model=str(files[0]), data=str(files[1]), target_length=96, population=4, parents=2,
                       mutations=1, crossovers=1, iterations=1, docs=2, descent_steps=2, device="cuda")
    s = run_search(cfg, tmp_path / "s", progress=False, cache=None)
    assert s["descent"]["steps"] == 2 and s["ppl"] > 1


def test_short_factor_search_on_the_device(cuda, files, tmp_path):
    from longrope.search.runner import SearchConfig, run_search

    long = tmp_path / "long.json"
    Scaling("longrope", long_factor=[1.0 + 0.3 * i for i in range(8)], factor=3.0,
            original_max_position=32).save(long)
    cfg = SearchConfig(model=str(files[0]), data=str(files[1]), target_length=32, short_of=str(long),
                       population=4, parents=2, mutations=1, crossovers=1, iterations=1, docs=2, device="cuda")
    assert run_search(cfg, tmp_path / "s", progress=False, cache=None)["ppl"] > 1


@pytest.mark.parametrize("extra", [{}, {"mixed_window": 0.5, "distill": 0.5}, {"lora_rank": 4, "bf16": True}])
def test_finetune_on_the_device(cuda, files, tmp_path, extra, monkeypatch):
    from longrope.train import engine
    from longrope.train.finetune import FinetuneConfig, finetune

    import accelerate

    # accelerate's process state is a per-process singleton that earlier tests made on the CPU: its
    # device is taken to be the pretend one (prepare() moves the model there, batches follow)
    monkeypatch.setattr(accelerate.Accelerator, "device", property(lambda self: torch.device("cuda", 0)))
    made = []
    real = engine.make_engine
    monkeypatch.setattr(engine, "make_engine", lambda device, **kw: made.append(real(device, **kw)) or made[-1])

    cfg = FinetuneConfig(out=str(tmp_path / "ft"), model=str(files[0]), data=str(files[1]),
                         cache_dir=str(files[2]), scaling="yarn:2", length=64, steps=2, batch_size=2, lr=1e-3,
                         device="cuda", checkpoint_every=1, **extra)
    s = finetune(cfg, progress=False)
    assert s["steps"] == 2 and s["final_loss"] > 0
    assert made[0].acc.device.type == "cuda"  # accelerate took the pretend device: the run was on it
    assert torch.backends.cuda.matmul.allow_tf32  # TF32 on, as on a real GPU


def test_compare_on_the_device(cuda, files):
    from longrope.eval.compare import CompareConfig, compare
    from longrope.models import load_model, load_tokenizer

    model = load_model(str(files[0]), device="cuda")
    assert on_device(next(model.parameters())) and torch.backends.cuda.matmul.allow_tf32
    cfg = CompareConfig(methods=["none", "yarn:4"], lengths=[32, 128], data=str(files[1]), docs=2,
                        passkey_trials=0)
    res = compare(model, load_tokenizer(str(files[0])), cfg, progress=False).to_json()
    assert set(res["ppl"]) == {"none", "yarn:4"}


def test_tf32_stays_off_on_the_cpu(files, tf32_off):
    from longrope.models import load_model

    load_model(str(files[0]), device="cpu")
    assert not torch.backends.cuda.matmul.allow_tf32


@pytest.mark.slow
def test_ruler_tasks_on_the_device(cuda):
    """lm-evaluation-harness moves the tensors itself (HFLM, given the model's device): checked too."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("wonderwords")
    from longrope.eval.tasks import run_tasks_at_lengths
    from longrope.models import load_model, load_tokenizer

    model = longrope.apply(load_model("builtin", device="cuda"), "yarn:2")
    res = run_tasks_at_lengths(model, load_tokenizer("builtin"), ["niah_single_1"], [256], limit=1, log=None)
    assert 0.0 <= res["niah_single_1"][256] <= 1.0


PROGRESSIVE_ON_DEVICE = """name: tiny-progressive-on-device
seed: 0
dtype: bfloat16
stages:
  - search: {target_length: 64, docs: 1, population: 3, parents: 2, mutations: 1, crossovers: 1, iterations: 1, screen_docs: 0, descent_steps: 0, search_n_hat: false}
  - finetune: {length: 64, steps: 2, batch_size: 1, lr: 1.0e-3, warmup: 0, bf16: true, distill: 1.0, checkpoint_every: 1}
  - search: {target_length: 128, docs: 1, population: 3, parents: 2, mutations: 1, crossovers: 1, iterations: 1, screen_docs: 0, descent_steps: 0, search_n_hat: false, seed_from: previous}
  - short: {docs: 1, population: 3, parents: 2, mutations: 1, crossovers: 1, iterations: 1, screen_docs: 0}
  - export: {}
  - compare: {lengths: [32, 256], methods: [none, yarn], final_methods: [none, yarn], docs: 2, passkey_trials: 1, passkey_lengths: [256], depths: [0.5], plots: false, baselines_on: initial}
"""


def test_the_smollm2_progressive_shape_runs_on_the_device(cuda, files, tmp_path, monkeypatch):
    """`extend --device cuda` with the stages of recipes/smollm2-progressive.yaml (search, fine-tune
    with distillation in bf16, search seeded from it, short factors, export, compare with the
    baselines on the initial model and the control on the fine-tuned one), on the pretend device:
    the GPU run of that recipe goes through these paths."""
    import json

    import accelerate

    from longrope.pipeline import run
    from longrope.recipe import load_recipe

    monkeypatch.setattr(accelerate.Accelerator, "device", property(lambda self: torch.device("cuda", 0)))
    path = tmp_path / "r.yaml"
    path.write_text(PROGRESSIVE_ON_DEVICE)
    out = tmp_path / "out"
    run(load_recipe(str(path)), out, model=str(files[0]), data=str(files[1]), device="cuda", log=lambda m: None)
    res = json.loads((out / "06-compare" / "results.json").read_text())
    assert {"none", "yarn", "longrope", "yarn (final model)"} <= set(res["ppl"])
    assert all(v > 1 for row in res["ppl"].values() for v in row.values())
    assert set(res["passkey"]["longrope"]) == {"256"}

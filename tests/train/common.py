"""The `longrope finetune` command line the fine-tuning tests start from."""


def ft_args(model, texts, cache, out, *extra, steps=6, length=64):
    return ["finetune", "--model", str(model), "--data", str(texts), "--cache-dir", str(cache),
            "--scaling", "yarn:2", "--length", str(length), "--steps", str(steps), "--out", str(out),
            "--batch-size", "2", "--lr", "1e-3", "--warmup", "1", "--no-progress", *extra]

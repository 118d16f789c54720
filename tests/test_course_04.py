"""The 04_vtrans course lab: its solutions pass their checks against the vtrans package, its stubs raise
NotImplementedError, its handout is clean, each check rejects plausible wrong answers, and the "predict, then run"
answers match the run."""

import labs
import torch

LAB = labs.Lab("04_vtrans", ids=["04.1", "04.2", "04.3", "04.4", "04.5"], written_ids=["04.q1"],
               preamble="import torch\nimport vtrans as V\nfrom prunebook import course\n",
               seeds={"04.1": [0, 7], "04.2": [0, 7], "04.3": [0], "04.4": [0, 7], "04.5": [0]},
               experiment="vtrans_experiment")


# Wrong implementations a student plausibly writes: each check must reject them.


def _size(embeddings=True, layer_norms=True, ln_when_off=False):
    def bert_size(shape, hidden, heads, inner, attn_on, ffn_on):
        H, dh, P = hidden, shape.head_dim, shape.pooler
        ln = 2 * H if layer_norms else 0
        size = ((shape.vocab + shape.max_positions + shape.type_vocab) * H if embeddings else 0) + ln
        for h, f, a, b in zip(heads, inner, attn_on, ffn_on):
            size += a * (4 * H * h * dh + 3 * h * dh + H) + (ln if a or ln_when_off and h else 0)
            size += b * (2 * H * f + f + H) + (ln if b or ln_when_off and f else 0)
        return size + H * P + P + P * shape.num_labels + shape.num_labels
    return bert_size


def _slice(columns="blocks", which="keep", biases=True):
    def slice_heads(attn, keep):
        import vtrans as V

        dh, n = attn.head_dim, int(keep.sum())
        heads = keep.nonzero().flatten().tolist() if which == "keep" else list(range(n))
        cols = torch.cat([torch.arange(j * dh, (j + 1) * dh) if columns == "blocks" else
                          torch.arange(j, attn.heads * dh, attn.heads) for j in heads])
        small = V.bert.Attention(attn.o.out_features, n, dh, attn.ln.eps, 0.0).to(attn.o.weight.dtype)
        with torch.no_grad():
            for w in ("q", "k", "v"):
                getattr(small, w).weight.copy_(getattr(attn, w).weight[cols])
                getattr(small, w).bias.copy_(getattr(attn, w).bias[cols] if biases else getattr(attn, w).bias)
            small.o.weight.copy_(attn.o.weight[:, cols])
            small.o.bias.copy_(attn.o.bias)
            small.ln.load_state_dict(attn.ln.state_dict())
        return small
    return slice_heads


PREDICTED_04 = {"minilm_parameters_in_millions": 22.7, "embedding_share_percent": 52, "saved_by_one_head": 49248,
                "saved_by_one_hidden_dimension": 59106, "sparsity_percent_with_every_ffn_removed": 31,
                "kl_of_the_unit_with_mu_0": 0.0, "kept_mu_0_6_sigma2_0_25": True}

WRONG_04 = {
    "04.1": {"σ for σ²": lambda mu, ls: 0.5 * torch.log1p(mu**2 / (0.5 * ls).exp()).sum(),
             "a mean over units": lambda mu, ls: 0.5 * torch.log1p(mu**2 / ls.exp()).mean(),
             "no ½": lambda mu, ls: torch.log1p(mu**2 / ls.exp()).sum()},
    "04.2": {"log α = 0 kept": lambda mu, ls: ls - torch.log(mu**2 + 1e-8) <= 0,
             "the rule reversed": lambda mu, ls: ls - torch.log(mu**2 + 1e-8) > 0,
             "|μ| > σ²": lambda mu, ls: mu.abs() > ls.exp()},
    "04.3": {"no embedding tables": _size(embeddings=False), "no LayerNorms": _size(layer_norms=False),
             "a sublayer that is off keeps its LayerNorm": _size(ln_when_off=True)},
    "04.4": {"interleaved columns": _slice(columns="interleaved"), "the first k heads": _slice(which="first"),
             "q, k, v biases left whole": _slice(biases=False)},
    "04.5": {"embeddings a small share": {**PREDICTED_04, "embedding_share_percent": 10},
             "a head without its biases": {**PREDICTED_04, "saved_by_one_head": 49152},
             "σ² = 0.25 prunes μ = 0.6": {**PREDICTED_04, "kept_mu_0_6_sigma2_0_25": False}},
}


class TestLab(labs.LabTests):
    lab, wrong, predicted = LAB, WRONG_04, PREDICTED_04

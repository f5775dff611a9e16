"""DistilBERT: BERT distilled to half its layers, with its own names and no segment embedding.

The math is BERT's (post-norm blocks, learned positions); its config says dim / n_layers /
n_heads / hidden_dim, its tensors are q_lin / k_lin / v_lin / out_lin, sa_layer_norm, ffn.lin1 /
lin2 and output_layer_norm, and its sequence classifier is `pre_classifier` + ReLU + `classifier`
on [CLS] (no pooler).
"""

from __future__ import annotations

from dataclasses import dataclass

from .bert import PROJECTION, encoder_spec, linear_rules, norm_rules, with_prefixes
from .encoder import EncoderSpec
from .family import ConfigError, Family, HFConfig, WeightRule, plausible_context, positive_int


@dataclass
class DistilBertConfig(HFConfig):
    vocab_size: int = 30522
    dim: int = 768
    n_layers: int = 6
    n_heads: int = 12
    hidden_dim: int = 3072
    activation: str = "gelu"
    max_position_embeddings: int = 512
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        positive_int(self, "vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "max_position_embeddings")
        plausible_context(self, "max_position_embeddings")
        if self.dim % self.n_heads:
            raise ConfigError(f"config.json: dim ({self.dim}) is not divisible by n_heads ({self.n_heads})")

    def to_spec(self) -> EncoderSpec:
        # DistilBERT's LayerNorms use PyTorch's default eps (1e-12 is written in its modules).
        return encoder_spec(
            self, vocab_size=self.vocab_size, hidden_size=self.dim, num_layers=self.n_layers, num_heads=self.n_heads,
            intermediate_size=self.hidden_dim, max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=0, norm_eps=1e-12, activation=self.activation, pad_token_id=self.pad_token_id,
            classifier="pre_classifier")


LAYER = "transformer.layer.{i}"
BASE_WEIGHTS = (
    WeightRule("embeddings.word_embeddings.weight", ("embed_tokens.weight",)),
    WeightRule("embeddings.position_embeddings.weight", ("embed_positions.weight",)),
    *norm_rules("embeddings.LayerNorm", "embed_norm"),
    *linear_rules(f"{LAYER}.attention.q_lin", "layers.{i}.attn.q_proj"),
    *linear_rules(f"{LAYER}.attention.k_lin", "layers.{i}.attn.k_proj"),
    *linear_rules(f"{LAYER}.attention.v_lin", "layers.{i}.attn.v_proj"),
    *linear_rules(f"{LAYER}.attention.out_lin", "layers.{i}.attn.o_proj"),
    *norm_rules(f"{LAYER}.sa_layer_norm", "layers.{i}.attn_norm"),
    *linear_rules(f"{LAYER}.ffn.lin1", "layers.{i}.mlp.up_proj"),
    *linear_rules(f"{LAYER}.ffn.lin2", "layers.{i}.mlp.down_proj"),
    *norm_rules(f"{LAYER}.output_layer_norm", "layers.{i}.mlp_norm"),
)
DISTILBERT_WEIGHTS = (*with_prefixes(BASE_WEIGHTS, ("", "distilbert.")),
                      *linear_rules("pre_classifier", "pre_classifier"), *linear_rules("classifier", "classifier"),
                      *linear_rules("qa_outputs", "qa_outputs"), *PROJECTION)
# The position-ids buffer, and the masked-LM head of DistilBertForMaskedLM.
DISTILBERT_UNUSED = (r"(distilbert\.)?embeddings\.position_ids", r"vocab_(transform|layer_norm|projector)\..*")

FAMILY = Family(
    model_type="distilbert", config_class=DistilBertConfig, rules=DISTILBERT_WEIGHTS, unused=DISTILBERT_UNUSED,
    tiny_config={"model_type": "distilbert", "vocab_size": 128, "dim": 64, "n_layers": 2, "n_heads": 4,
                 "hidden_dim": 128, "max_position_embeddings": 128, "architectures": ["DistilBertModel"]},
    description="DistilBERT: BERT's encoder with half the layers, no segment embedding, a ReLU classifier",
    test_variants=(("feature-extraction", {}),
                   ("sequence-classification", {"architectures": ["DistilBertForSequenceClassification"],
                                                "id2label": {"0": "negative", "1": "positive"}}),
                   ("token-classification", {"architectures": ["DistilBertForTokenClassification"],
                                             "id2label": {"0": "O", "1": "B-ORG", "2": "I-ORG"}}),
                   ("question-answering", {"architectures": ["DistilBertForQuestionAnswering"]})),
)

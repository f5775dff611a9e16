"""BERT (and the students that keep its layout: TinyBERT, MiniLM) and RoBERTa.

Both store q, k, v, the attention output and the MLP as separate nn.Linear tensors with biases,
LayerNorms after each residual add, absolute learned positions and a segment embedding. RoBERTa
differs in three ways: positions count from pad_token_id + 1, its classification head is
`classifier.dense` + tanh + `classifier.out_proj` on <s> (BERT's is the pooler's dense + tanh,
then `classifier`), and its tensors sit under `roberta.`. A checkpoint saved from the bare model
(sentence-transformers' all-MiniLM-L6-v2 is a `BertModel`) has no prefix at all; one saved from a
task model has `bert.` / `roberta.`: the rules accept both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .encoder import EncoderSpec
from .family import ConfigError, Family, HFConfig, WeightRule, plausible_context, positive_float, positive_int

# The architectures suffix -> the task it was trained for. A bare model (BertModel), a masked-LM
# or pre-training checkpoint is exported as feature extraction (its MLM head is not used).
ARCHITECTURE_TASKS = {
    "ForSequenceClassification": "sequence-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
    "Model": "feature-extraction",
    "ForMaskedLM": "feature-extraction",
    "ForPreTraining": "feature-extraction",
}


def task_of(config: HFConfig) -> str:
    """The task named by config.json's `architectures` (the class the checkpoint was saved from)."""
    architectures = config.extra.get("architectures") or []
    if not architectures:
        return "feature-extraction"
    name = str(architectures[0])
    for suffix, task in ARCHITECTURE_TASKS.items():
        if name.endswith(suffix):
            return task
    raise ConfigError(f"config.json: architecture {name!r} is not supported (supported tasks: feature extraction, "
                      "sequence classification, token classification, question answering)")


def labels_of(config: HFConfig, task: str) -> tuple[str, ...]:
    """id2label in id order (HF writes its keys as strings); LABEL_<i> when only num_labels is given."""
    if task not in ("sequence-classification", "token-classification"):
        return ()
    id2label = config.extra.get("id2label")
    if isinstance(id2label, dict) and id2label:
        try:
            ordered = sorted((int(k), str(v)) for k, v in id2label.items())
        except ValueError:
            raise ConfigError(f"config.json: id2label keys must be integers, got {sorted(id2label)[:3]}") from None
        if [i for i, _ in ordered] != list(range(len(ordered))):
            raise ConfigError(f"config.json: id2label must number its labels 0..{len(ordered) - 1}")
        return tuple(v for _, v in ordered)
    count = config.extra.get("num_labels", 2)
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        raise ConfigError(f"config.json: num_labels must be a positive integer, got {count!r}")
    return tuple(f"LABEL_{i}" for i in range(count))


def encoder_spec(config: HFConfig, **fields: Any) -> EncoderSpec:
    task = task_of(config)
    try:
        return EncoderSpec(task=task, labels=labels_of(config, task), **fields)
    except ValueError as e:
        raise ConfigError(f"config.json: {e}") from None


@dataclass
class BertConfig(HFConfig):
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    is_decoder: bool = False
    add_cross_attention: bool = False
    model_type: str = field(default="bert", repr=False)

    def __post_init__(self) -> None:
        positive_int(self, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings")
        positive_float(self, "layer_norm_eps")
        plausible_context(self, "max_position_embeddings")
        if self.position_embedding_type != "absolute":
            raise ConfigError(f"config.json: position_embedding_type {self.position_embedding_type!r} is not supported "
                              "(only 'absolute')")
        if self.is_decoder or self.add_cross_attention:
            raise ConfigError("config.json: a BERT used as a decoder (is_decoder / add_cross_attention) is not supported")

    def to_spec(self) -> EncoderSpec:
        roberta = self.model_type == "roberta"
        return encoder_spec(
            self, vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_layers=self.num_hidden_layers,
            num_heads=self.num_attention_heads, intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings, type_vocab_size=self.type_vocab_size,
            norm_eps=self.layer_norm_eps, activation=self.hidden_act, pad_token_id=self.pad_token_id,
            positions_after_padding_id=roberta, classifier="dense_tanh" if roberta else "pooler")


@dataclass
class RobertaConfig(BertConfig):
    vocab_size: int = 50265
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    model_type: str = field(default="roberta", repr=False)


def norm_rules(checkpoint: str, ours: str) -> tuple[WeightRule, ...]:
    """A LayerNorm's two tensors, under today's names and the gamma/beta of old TF-era checkpoints."""
    return tuple(WeightRule(f"{checkpoint}.{theirs}", (f"{ours}.{mine}",))
                 for theirs, mine in (("weight", "weight"), ("bias", "bias"), ("gamma", "weight"), ("beta", "bias")))


def linear_rules(checkpoint: str, ours: str) -> tuple[WeightRule, ...]:
    return (WeightRule(f"{checkpoint}.weight", (f"{ours}.weight",)), WeightRule(f"{checkpoint}.bias", (f"{ours}.bias",)))


def with_prefixes(rules: tuple[WeightRule, ...], prefixes: tuple[str, ...]) -> tuple[WeightRule, ...]:
    """Each rule under each prefix ("" included): the base model's tensors as a bare model and as
    part of a task model are the same tensors."""
    return tuple(dataclasses.replace(rule, checkpoint=prefix + rule.checkpoint) for prefix in prefixes for rule in rules)


LAYER = "encoder.layer.{i}"
BASE_WEIGHTS = (
    WeightRule("embeddings.word_embeddings.weight", ("embed_tokens.weight",)),
    WeightRule("embeddings.position_embeddings.weight", ("embed_positions.weight",)),
    WeightRule("embeddings.token_type_embeddings.weight", ("embed_types.weight",)),
    *norm_rules("embeddings.LayerNorm", "embed_norm"),
    *linear_rules(f"{LAYER}.attention.self.query", "layers.{i}.attn.q_proj"),
    *linear_rules(f"{LAYER}.attention.self.key", "layers.{i}.attn.k_proj"),
    *linear_rules(f"{LAYER}.attention.self.value", "layers.{i}.attn.v_proj"),
    *linear_rules(f"{LAYER}.attention.output.dense", "layers.{i}.attn.o_proj"),
    *norm_rules(f"{LAYER}.attention.output.LayerNorm", "layers.{i}.attn_norm"),
    *linear_rules(f"{LAYER}.intermediate.dense", "layers.{i}.mlp.up_proj"),
    *linear_rules(f"{LAYER}.output.dense", "layers.{i}.mlp.down_proj"),
    *norm_rules(f"{LAYER}.output.LayerNorm", "layers.{i}.mlp_norm"),
)
HEADS = (
    *linear_rules("qa_outputs", "qa_outputs"),
    *linear_rules("classifier", "classifier"),  # BERT's sequence and token classifiers, RoBERTa's token one
)
# sentence-transformers' Dense module after the pooling (its own 2_Dense/model.safetensors).
PROJECTION = linear_rules("linear", "projection")
BERT_WEIGHTS = (*with_prefixes(BASE_WEIGHTS, ("", "bert.")), *with_prefixes(linear_rules("pooler.dense", "pre_classifier"),
                                                                            ("", "bert.")), *HEADS, *PROJECTION)
ROBERTA_WEIGHTS = (*with_prefixes(BASE_WEIGHTS, ("", "roberta.")), *HEADS, *PROJECTION,
                   *linear_rules("classifier.dense", "pre_classifier"), *linear_rules("classifier.out_proj", "classifier"))

# The position-ids buffer some versions save, the pooler where the task does not read it, and the
# pre-training heads (masked LM, next sentence): none is part of the exported model.
BERT_UNUSED = (r"(bert\.)?embeddings\.position_ids", r"(bert\.)?pooler\..*", r"cls\..*")
ROBERTA_UNUSED = (r"(roberta\.)?embeddings\.position_ids", r"(roberta\.)?pooler\..*", r"lm_head\..*")

_TINY = {"vocab_size": 128, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 128, "max_position_embeddings": 128}
FAMILY = Family(
    model_type="bert", config_class=BertConfig, rules=BERT_WEIGHTS, unused=BERT_UNUSED,
    tiny_config={"model_type": "bert", **_TINY, "architectures": ["BertModel"]},
    description="BERT, TinyBERT, MiniLM: post-norm encoder, learned positions, segment embedding",
    test_variants=(("feature-extraction", {}),
                   ("sequence-classification", {"architectures": ["BertForSequenceClassification"],
                                                "id2label": {"0": "negative", "1": "neutral", "2": "positive"}}),
                   ("token-classification", {"architectures": ["BertForTokenClassification"],
                                             "id2label": {"0": "O", "1": "B-PER", "2": "I-PER", "3": "B-LOC"}}),
                   ("question-answering", {"architectures": ["BertForQuestionAnswering"]})),
)
ROBERTA_FAMILY = Family(
    model_type="roberta", config_class=RobertaConfig, rules=ROBERTA_WEIGHTS, unused=ROBERTA_UNUSED,
    tiny_config={"model_type": "roberta", **_TINY, "max_position_embeddings": 130, "type_vocab_size": 1,
                 "pad_token_id": 1, "architectures": ["RobertaModel"]},
    description="RoBERTa: BERT's encoder with positions after the padding id and a dense + tanh classifier",
    test_variants=(("feature-extraction", {}),
                   ("sequence-classification", {"architectures": ["RobertaForSequenceClassification"],
                                                "id2label": {"0": "negative", "1": "positive"}})),
)

package org.slmexport.demo.bundle

import kotlinx.serialization.ExperimentalSerializationApi
import kotlinx.serialization.SerialName
import kotlinx.serialization.Serializable
import kotlinx.serialization.json.JsonIgnoreUnknownKeys
import kotlinx.serialization.json.JsonObject

/*
 * manifest.json, the contract between slm-export and this app (docs/MANIFEST.md; JSON Schema in
 * exporter/schema/manifest.schema.json). Every property carries @SerialName with the schema's key,
 * and only keys that exist in the schema are declared: tests/ on the Python side extract every
 * @SerialName from android-demo/ and check it against the schema. Optional keys have defaults;
 * required keys have none, so a manifest without them is refused.
 */

/**
 * What every bundle's manifest.json has: a decoder's ([Manifest]: chat and completion) or an
 * encoder's ([EncoderManifest]: search, classification, question answering). ManifestParser picks
 * the type by the `encoder` section, which only an encoder bundle has.
 */
sealed interface BundleManifest {
    val schemaVersion: Int
    val generator: Generator
    val target: String
    val model: ModelInfo
    val tokenizer: TokenizerInfo
    val parity: ParityFiles
    val files: List<BundleFile>
    val extras: List<ExtraFile>

    /** Each artifact's format, path and digest, in the manifest's order. */
    val artifactFiles: List<ArtifactFile>
}

/** What every artifact entry has, decoder's or encoder's: what the verifier checks. */
data class ArtifactFile(val format: String, val path: String, val sha256: String)

@Serializable
data class Manifest(
    @SerialName("schema_version") override val schemaVersion: Int,
    @SerialName("generator") override val generator: Generator,
    @SerialName("target") override val target: String,
    @SerialName("model") override val model: ModelInfo,
    @SerialName("tokenizer") override val tokenizer: TokenizerInfo,
    // Only for a chat model: its template, stop ids and generation defaults (docs/MANIFEST.md, Chat).
    @SerialName("chat") val chat: ChatInfo? = null,
    @SerialName("artifacts") val artifacts: List<Artifact>,
    // Encoders bundled beside the decoder, each a complete encoder bundle in its own folder whose
    // files this manifest also lists (docs/MANIFEST.md, Companions): the Search, Classify and Ask
    // screens run them.
    @SerialName("companions") val companions: List<Companion> = emptyList(),
    @SerialName("parity") override val parity: ParityFiles,
    @SerialName("files") override val files: List<BundleFile>,
    // Files slm-export keeps in OUT/<target>/extras/ and never bundles (model.onnx, ...): the app
    // neither has nor reads them; declared so that the strict parser accepts the key.
    @SerialName("extras") override val extras: List<ExtraFile> = emptyList(),
) : BundleManifest {
    /** The artifact of one format, if the bundle has it. */
    fun artifact(format: ArtifactFormat): Artifact? = artifacts.firstOrNull { it.format == format.key }

    override val artifactFiles: List<ArtifactFile> get() = artifacts.map { ArtifactFile(it.format, it.path, it.sha256) }
}

/** An encoder bundle's manifest.json (docs/MANIFEST.md, Encoders). */
@Serializable
data class EncoderManifest(
    @SerialName("schema_version") override val schemaVersion: Int,
    @SerialName("generator") override val generator: Generator,
    @SerialName("target") override val target: String,
    @SerialName("model") override val model: ModelInfo,
    @SerialName("tokenizer") override val tokenizer: TokenizerInfo,
    @SerialName("encoder") val encoder: EncoderInfo,
    @SerialName("artifacts") val artifacts: List<EncoderArtifact>,
    @SerialName("parity") override val parity: ParityFiles,
    @SerialName("files") override val files: List<BundleFile>,
    @SerialName("extras") override val extras: List<ExtraFile> = emptyList(),
) : BundleManifest {
    fun artifact(format: ArtifactFormat): EncoderArtifact? = artifacts.firstOrNull { it.format == format.key }

    override val artifactFiles: List<ArtifactFile> get() = artifacts.map { ArtifactFile(it.format, it.path, it.sha256) }
}

@Serializable
data class Generator(
    @SerialName("name") val name: String,
    @SerialName("version") val version: String,
    @SerialName("tools") val tools: Map<String, String>,
)

@Serializable
data class ModelInfo(
    @SerialName("name") val name: String,
    @SerialName("family") val family: String,
    @SerialName("parameters") val parameters: Long,
    @SerialName("vocab_size") val vocabSize: Int,
    @SerialName("max_seq_len") val maxSeqLen: Int,
    // Required, but may be null (a model without a bos token).
    @SerialName("bos_token_id") val bosTokenId: Int?,
    @SerialName("eos_token_ids") val eosTokenIds: List<Int>,
    @SerialName("source_sha256") val sourceSha256: String,
)

@Serializable
data class TokenizerInfo(
    @SerialName("path") val path: String,
    @SerialName("sha256") val sha256: String,
    @SerialName("config_path") val configPath: String? = null,
    @SerialName("config_sha256") val configSha256: String? = null,
    @SerialName("add_special_tokens") val addSpecialTokens: Boolean? = null,
    @SerialName("self_test") val selfTest: List<TokenizerCase> = emptyList(),
)

@Serializable
data class TokenizerCase(
    @SerialName("text") val text: String,
    @SerialName("ids") val ids: List<Int>,
)

@Serializable
data class ChatInfo(
    @SerialName("template") val template: String,
    @SerialName("template_source") val templateSource: String,
    @SerialName("template_variables") val templateVariables: Map<String, String>,
    @SerialName("stop_token_ids") val stopTokenIds: List<Int>,
    @SerialName("end_of_turn_token") val endOfTurnToken: String?,
    @SerialName("bos_in_template") val bosInTemplate: Boolean,
    // Always false and 0: a rendered chat is encoded without the post-processor, and no BOS is
    // added (the template writes it where the model wants one).
    @SerialName("add_special_tokens") val addSpecialTokens: Boolean,
    @SerialName("bos_added_by_runtime") val bosAddedByRuntime: Int,
    // The template as strings this app concatenates (null: the app cannot apply it).
    @SerialName("portable") val portable: PortableTemplateInfo?,
    @SerialName("unsupported") val unsupported: List<String>,
    @SerialName("generation") val generation: GenerationDefaults,
    @SerialName("vectors") val vectors: List<ChatVector>,
)

@Serializable
data class PortableTemplateInfo(
    @SerialName("prefix") val prefix: String,
    @SerialName("roles") val roles: Roles,
    @SerialName("generation_prompt") val generationPrompt: String,
    @SerialName("default_system") val defaultSystem: String?,
)

/** A role's prefix and suffix; no system role: the template has no turn of its own for it. */
@Serializable
data class Roles(
    @SerialName("system") val system: RoleAffix? = null,
    @SerialName("user") val user: RoleAffix,
    @SerialName("assistant") val assistant: RoleAffix,
)

@Serializable
data class RoleAffix(
    @SerialName("prefix") val prefix: String,
    @SerialName("suffix") val suffix: String,
)

@Serializable
data class GenerationDefaults(
    @SerialName("temperature") val temperature: Double? = null,
    @SerialName("top_p") val topP: Double? = null,
    @SerialName("top_k") val topK: Int? = null,
    @SerialName("repetition_penalty") val repetitionPenalty: Double? = null,
    @SerialName("max_new_tokens") val maxNewTokens: Int? = null,
)

@Serializable
data class ChatVector(
    @SerialName("name") val name: String,
    @SerialName("messages") val messages: List<ChatVectorMessage>,
    @SerialName("add_generation_prompt") val addGenerationPrompt: Boolean,
    @SerialName("text") val text: String? = null,
    @SerialName("ids") val ids: List<Int>? = null,
    @SerialName("error") val error: String? = null,
)

@Serializable
data class ChatVectorMessage(
    @SerialName("role") val role: String,
    @SerialName("content") val content: String,
)

@Serializable
data class Artifact(
    @SerialName("format") val format: String,
    @SerialName("path") val path: String,
    @SerialName("quantization") val quantization: String,
    @SerialName("bytes") val bytes: Long,
    @SerialName("sha256") val sha256: String,
    @SerialName("parity") val parity: ParitySummary,
    @SerialName("self_test") val selfTest: ArtifactSelfTest,
    // Present when `--quant auto` chose this artifact: the candidates tried, smallest first.
    @SerialName("search") val search: Search? = null,
    // Present when the artifact missed its quality gate and was shipped anyway
    // (--accept-quality-loss): the app shows the failures beside the runtime.
    @SerialName("quality_loss") val qualityLoss: QualityLoss? = null,
)

@Serializable
data class QualityLoss(
    @SerialName("accepted_with") val acceptedWith: String,
    @SerialName("failures") val failures: List<String>,
)

/** What `--quant auto` tried (the schema leaves the gate and each candidate open). */
@Serializable
data class Search(
    @SerialName("gate") val gate: JsonObject,
    @SerialName("seconds") val seconds: Double,
    @SerialName("tried") val tried: List<SearchCandidate>,
)

@OptIn(ExperimentalSerializationApi::class)
@JsonIgnoreUnknownKeys
@Serializable
data class SearchCandidate(
    @SerialName("quantization") val quantization: String,
    @SerialName("passed") val passed: Boolean,
    @SerialName("bytes") val bytes: Long? = null,
)

/** The parity summary. The schema leaves this object open (no additionalProperties: false). */
@OptIn(ExperimentalSerializationApi::class)
@JsonIgnoreUnknownKeys
@Serializable
data class ParitySummary(
    @SerialName("passed") val passed: Boolean,
    @SerialName("reference") val reference: String,
    @SerialName("top1") val top1: Double,
    @SerialName("kl_mean") val klMean: Double,
    @SerialName("greedy_prefix_min") val greedyPrefixMin: Double,
    @SerialName("top5_overlap") val top5Overlap: Double? = null,
    @SerialName("kl_max") val klMax: Double? = null,
    @SerialName("cosine_min") val cosineMin: Double? = null,
    @SerialName("max_abs") val maxAbs: Double? = null,
    @SerialName("ties") val ties: Int? = null,
    @SerialName("steps") val steps: Int? = null,
    @SerialName("failures") val failures: List<String> = emptyList(),
    // On the held-out text (docs/PARITY.md): top-1 agreement and relative perplexity change.
    @SerialName("text_top1") val textTop1: Double? = null,
    @SerialName("ppl_change") val pplChange: Double? = null,
)

@Serializable
data class ArtifactSelfTest(
    @SerialName("rule") val rule: String,
    @SerialName("cases") val cases: List<SelfTestCase>,
)

@Serializable
data class SelfTestCase(
    @SerialName("name") val name: String,
    @SerialName("prompt_ids") val promptIds: List<Int>,
    @SerialName("expected_ids") val expectedIds: List<Int>,
    @SerialName("must_match") val mustMatch: Int,
)

@Serializable
data class ParityFiles(
    @SerialName("results") val results: String,
    @SerialName("report") val report: String,
    @SerialName("reference") val reference: String,
)

@Serializable
data class BundleFile(
    @SerialName("path") val path: String,
    @SerialName("bytes") val bytes: Long,
    @SerialName("sha256") val sha256: String,
)

@Serializable
data class ExtraFile(
    @SerialName("path") val path: String,
    @SerialName("bytes") val bytes: Long,
    @SerialName("sha256") val sha256: String,
    @SerialName("purpose") val purpose: String,
)

@Serializable
data class Companion(
    @SerialName("role") val role: String,
    @SerialName("path") val path: String,
    @SerialName("task") val task: String,
    @SerialName("manifest_sha256") val manifestSha256: String,
)

/** An encoder bundle's own section: the task its graph computes, its inputs and outputs. */
@Serializable
data class EncoderInfo(
    @SerialName("task") val task: String,
    // The graph's inputs in order: input_ids, attention_mask and, where the model has segments,
    // token_type_ids.
    @SerialName("inputs") val inputs: List<String>,
    @SerialName("outputs") val outputs: List<String>,
    @SerialName("labels") val labels: List<String>,
    @SerialName("pad_token_id") val padTokenId: Int,
    @SerialName("pooling") val pooling: EncoderPooling? = null,
)

@Serializable
data class EncoderPooling(
    @SerialName("mode") val mode: String,
    @SerialName("normalize") val normalize: Boolean,
    @SerialName("source") val source: String,
)

@Serializable
data class EncoderArtifact(
    @SerialName("format") val format: String,
    @SerialName("path") val path: String,
    @SerialName("quantization") val quantization: String,
    @SerialName("bytes") val bytes: Long,
    @SerialName("sha256") val sha256: String,
    @SerialName("seconds") val seconds: Double? = null,
    @SerialName("parity") val parity: EncoderParity,
    @SerialName("self_test") val selfTest: EncoderSelfTest,
)

/** An encoder artifact's figures against the fp32 reference (the schema leaves the object open). */
@OptIn(ExperimentalSerializationApi::class)
@JsonIgnoreUnknownKeys
@Serializable
data class EncoderParity(
    @SerialName("passed") val passed: Boolean,
    @SerialName("reference") val reference: String,
    @SerialName("max_abs") val maxAbs: Double,
    @SerialName("texts") val texts: Int,
    @SerialName("cosine_min") val cosineMin: Double? = null,
    @SerialName("cosine_mean") val cosineMean: Double? = null,
    @SerialName("neighbour_agreement") val neighbourAgreement: Double? = null,
    @SerialName("label_agreement") val labelAgreement: Double? = null,
    @SerialName("span_match") val spanMatch: Double? = null,
)

@Serializable
data class EncoderSelfTest(
    @SerialName("rule") val rule: String,
    @SerialName("cases") val cases: List<EncoderSelfTestCase>,
)

/** An encoder artifact's golden case: its ids, run alone, give `expected` (one list per output). */
@Serializable
data class EncoderSelfTestCase(
    @SerialName("name") val name: String,
    @SerialName("input_ids") val inputIds: List<Int>,
    @SerialName("token_type_ids") val tokenTypeIds: List<Int>,
    @SerialName("expected") val expected: List<List<Double>>,
    // Question answering: the answer's first and last token, from `expected`.
    @SerialName("span") val span: List<Int>? = null,
)

/**
 * The runtimes this app can run, keyed by the manifest's artifact `format`. A decoder's ONNX
 * artifact runs in ONNX Runtime GenAI, an encoder's in plain ONNX Runtime (its Java API).
 */
enum class ArtifactFormat(val key: String, val label: String) {
    EXECUTORCH("executorch", "ExecuTorch (XNNPACK)"),
    ONNX("onnx", "ONNX Runtime");

    companion object {
        fun fromKey(key: String): ArtifactFormat? = entries.firstOrNull { it.key == key }
    }
}

package org.slmexport.demo.runtime

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtException
import ai.onnxruntime.OrtSession
import java.io.Closeable
import java.io.File
import java.nio.LongBuffer
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import org.slmexport.demo.bundle.ArtifactFormat
import org.slmexport.demo.bundle.EncoderArtifact
import org.slmexport.demo.bundle.EncoderInfo

/**
 * One loaded encoder artifact. [run] takes one text's ids and token types (unpadded, so the
 * attention mask is all ones) and returns the task's outputs in the manifest's encoder.outputs
 * order, each flattened: [E] embeddings, [C] or [T, C] logits, [T] start and end logits. Calls
 * block; the app makes them on its one inference thread.
 */
interface EncoderEngine : Closeable {
    val format: ArtifactFormat

    fun run(ids: IntArray, typeIds: IntArray): List<FloatArray>

    companion object {
        fun open(bundleDir: File, encoder: EncoderInfo, artifact: EncoderArtifact): EncoderEngine {
            val path = File(bundleDir, artifact.path)
            return when (ArtifactFormat.fromKey(artifact.format)) {
                ArtifactFormat.EXECUTORCH -> ExecuTorchEncoder(path, encoder)
                ArtifactFormat.ONNX -> OrtEncoder(path, encoder)
                null -> throw DemoException("This app cannot run ${artifact.format} artifacts.")
            }
        }

        /** The graph's inputs for one unpadded text, in encoder.inputs order. */
        fun inputs(encoder: EncoderInfo, ids: IntArray, typeIds: IntArray): List<LongArray> = encoder.inputs.map { name ->
            when (name) {
                "input_ids" -> LongArray(ids.size) { ids[it].toLong() }
                "attention_mask" -> LongArray(ids.size) { 1L }
                "token_type_ids" -> LongArray(ids.size) { typeIds[it].toLong() }
                else -> throw DemoException("The encoder takes an input this app does not know: $name.")
            }
        }
    }
}

/**
 * executorch/model.pte through ExecuTorch's Module API (org.pytorch:executorch-android 1.5.1,
 * org.pytorch.executorch; Module.kt, Tensor.kt, EValue.kt): Module.load(path), forward(vararg
 * EValue): Array<EValue>, Tensor.fromBlob(LongArray, LongArray shape), EValue.from(Tensor),
 * toTensor().dataAsFloatArray, close(). The encoder .pte takes one text ([1, T], int64) of any
 * length up to the manifest's max_seq_len.
 */
class ExecuTorchEncoder(pte: File, private val encoder: EncoderInfo) : EncoderEngine {
    override val format = ArtifactFormat.EXECUTORCH
    private val module: Module = try {
        Module.load(pte.absolutePath)
    } catch (e: RuntimeException) {
        throw DemoException(ErrorMessages.describe(e, "Loading ${pte.name} failed"), e)
    }

    override fun run(ids: IntArray, typeIds: IntArray): List<FloatArray> {
        val shape = longArrayOf(1, ids.size.toLong())
        val inputs = EncoderEngine.inputs(encoder, ids, typeIds).map { EValue.from(Tensor.fromBlob(it, shape)) }
        val outputs = try {
            module.forward(*inputs.toTypedArray())
        } catch (e: RuntimeException) {
            throw DemoException(ErrorMessages.describe(e, "Running the encoder failed"), e)
        }
        if (outputs.size != encoder.outputs.size) {
            throw DemoException("model.pte returned ${outputs.size} outputs; the manifest names ${encoder.outputs.size} (${encoder.outputs.joinToString()}).")
        }
        return outputs.map { it.toTensor().dataAsFloatArray }
    }

    override fun close() = module.close()
}

/**
 * The encoder's model.ort through ONNX Runtime's Java API (com.microsoft.onnxruntime:
 * onnxruntime-android 1.31.0, package ai.onnxruntime): OrtEnvironment.getEnvironment(),
 * createSession(path, SessionOptions), OnnxTensor.createTensor(env, LongBuffer, shape),
 * session.run(Map<String, OnnxTensor>) -> Result, whose values are read by output name. GenAI is
 * for decoders; an encoder needs only plain ONNX Runtime, which the app links already.
 */
class OrtEncoder(model: File, private val encoder: EncoderInfo) : EncoderEngine {
    override val format = ArtifactFormat.ONNX
    private val env = OrtEnvironment.getEnvironment()
    private val session: OrtSession = try {
        OrtSession.SessionOptions().use { options -> env.createSession(model.absolutePath, options) }
    } catch (e: OrtException) {
        throw DemoException("ONNX Runtime could not load ${model.name}: ${e.message}", e)
    }

    override fun run(ids: IntArray, typeIds: IntArray): List<FloatArray> {
        val shape = longArrayOf(1, ids.size.toLong())
        val tensors = encoder.inputs.zip(EncoderEngine.inputs(encoder, ids, typeIds)).associate { (name, values) ->
            name to OnnxTensor.createTensor(env, LongBuffer.wrap(values), shape)
        }
        try {
            session.run(tensors).use { result ->
                return encoder.outputs.map { name ->
                    val value = result.get(name).orElseThrow { DemoException("model.ort has no output '$name'.") } as OnnxTensor
                    val buffer = value.floatBuffer
                    FloatArray(buffer.remaining()).also { buffer.get(it) }
                }
            }
        } catch (e: OrtException) {
            throw DemoException("ONNX Runtime failed running the encoder: ${e.message}", e)
        } finally {
            tensors.values.forEach { it.close() }
        }
    }

    override fun close() = session.close()
}

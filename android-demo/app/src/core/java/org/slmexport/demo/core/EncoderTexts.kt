package org.slmexport.demo.core

/**
 * The encoder screens' built-in texts: exporter/data/encoder_texts.json, packaged into the app
 * as-is (android-demo/app/build.gradle.kts), so the Search screen ranks the same passages as
 * `slm-export run BUNDLE --task search` and the Ask screen offers the exporter's QA examples.
 */
class EncoderTexts(val passages: List<String>, val qaExamples: List<Pair<String, String>>) {
    companion object {
        const val FILE = "encoder_texts.json"

        fun parse(text: String): EncoderTexts {
            val root = MiniJson.parse(text) as? Map<*, *> ?: throw IllegalArgumentException("$FILE is not a JSON object")
            val passages = (root["sentences"] as? List<*>)?.map { it as String } ?: throw IllegalArgumentException("$FILE has no sentences")
            val qa = (root["qa"] as? List<*>).orEmpty().map {
                val pair = it as Map<*, *>
                (pair["question"] as String) to (pair["context"] as String)
            }
            return EncoderTexts(passages, qa)
        }
    }
}

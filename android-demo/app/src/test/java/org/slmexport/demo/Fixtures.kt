package org.slmexport.demo

/** Test resources (app/src/test/resources). */
object Fixtures {
    /**
     * manifest.json of a real bundle: `python -m exporter --target android --quant none
     * --max-seq-len 64 --no-bundle` on the built-in student (both artifacts unquantized).
     */
    fun manifestJson(): String =
        requireNotNull(Fixtures::class.java.classLoader!!.getResource("manifest.json")) { "manifest.json fixture missing" }
            .readText()

    /**
     * manifest.json of the built-in encoder student's bundle as `slm-export --target android`
     * bundles it beside the decoder student (search/manifest.json).
     */
    fun encoderManifestJson(): String =
        requireNotNull(Fixtures::class.java.classLoader!!.getResource("encoder/manifest.json")) { "encoder/manifest.json fixture missing" }
            .readText()
}

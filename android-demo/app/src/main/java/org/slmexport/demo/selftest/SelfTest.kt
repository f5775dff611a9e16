package org.slmexport.demo.selftest

import org.slmexport.demo.bundle.SelfTestCase

/** The outcome of one golden case. */
data class CaseOutcome(
    val name: String,
    val passed: Boolean,
    /** How many leading ids (or, for text comparison, whether the prefix) matched. */
    val matched: Int,
    val mustMatch: Int,
    val detail: String,
)

/** The golden self-test of one artifact. `passed` needs at least one case and every case passing. */
data class SelfTestReport(
    val format: String,
    val method: Method,
    val outcomes: List<CaseOutcome>,
    /** Set when the self-test could not run at all (no cases, or the runtime failed). */
    val error: String? = null,
) {
    enum class Method { TOKEN_IDS, DECODED_TEXT }

    val passed: Boolean get() = error == null && outcomes.isNotEmpty() && outcomes.all { it.passed }

    fun summary(): String = when {
        error != null -> "Self-test could not run: $error"
        outcomes.isEmpty() -> "Self-test: the manifest has no cases for $format."
        passed -> "Self-test passed: ${outcomes.size}/${outcomes.size} golden cases reproduced" +
            (if (method == Method.DECODED_TEXT) " (compared as text)." else ".")
        else -> "Self-test FAILED: ${outcomes.count { !it.passed }} of ${outcomes.size} cases differ from the host. " +
            outcomes.first { !it.passed }.detail
    }
}

/**
 * The manifest's golden self-test: greedy generation from a case's prompt_ids must reproduce the
 * first must_match ids of its expected_ids (the ids the same artifact produced on the host).
 * The runtimes are passed in as functions, so the comparison is plain Kotlin and unit-tested.
 */
object SelfTest {

    /**
     * For runtimes that take token ids (ONNX Runtime GenAI: Generator.appendTokens(int[])).
     * [generate] gets the prompt ids and how many new ids to produce, and returns the new ids.
     */
    fun runIds(format: String, cases: List<SelfTestCase>, generate: (List<Int>, Int) -> List<Int>): SelfTestReport {
        if (cases.isEmpty()) return SelfTestReport(format, SelfTestReport.Method.TOKEN_IDS, emptyList())
        val outcomes = cases.map { case ->
            val want = mustMatch(case)
            try {
                compareIds(case.name, case.expectedIds, want, generate(case.promptIds, want))
            } catch (e: Exception) {
                CaseOutcome(case.name, false, 0, want, "Case '${case.name}': generation failed (${e.message ?: e.javaClass.simpleName}).")
            }
        }
        return SelfTestReport(format, SelfTestReport.Method.TOKEN_IDS, outcomes)
    }

    fun compareIds(name: String, expected: List<Int>, mustMatch: Int, actual: List<Int>): CaseOutcome {
        var matched = 0
        while (matched < mustMatch && matched < actual.size && actual[matched] == expected[matched]) matched++
        val passed = matched >= mustMatch
        val detail = when {
            passed -> "Case '$name': first $mustMatch ids match."
            matched < actual.size ->
                "Case '$name': id ${matched + 1} is ${actual[matched]}, the host produced ${expected[matched]} " +
                    "(first $matched of $mustMatch matched)."
            else -> "Case '$name': generation stopped after ${actual.size} ids, $mustMatch had to match."
        }
        return CaseOutcome(name, passed, matched, mustMatch, detail)
    }

    /**
     * For runtimes that only take text (ExecuTorch's LlmModule: generate(String, ...); its Java
     * API has no token-id entry point in 1.5.x). The prompt ids are decoded to text and encoded
     * again by the runner, and the decoded text of the first must_match expected ids must be a
     * prefix of the generated text. This is weaker than comparing ids (two id sequences can
     * decode to the same text, and a prompt may re-encode differently), which the report says.
     */
    fun runText(
        format: String,
        cases: List<SelfTestCase>,
        decode: (List<Int>) -> String,
        generateText: (prompt: String, promptIds: Int, newTokens: Int) -> String,
    ): SelfTestReport {
        if (cases.isEmpty()) return SelfTestReport(format, SelfTestReport.Method.DECODED_TEXT, emptyList())
        val outcomes = cases.map { case ->
            val want = mustMatch(case)
            try {
                val prompt = decode(case.promptIds)
                val expectedText = decode(case.expectedIds.take(want))
                val actual = generateText(prompt, case.promptIds.size, want)
                compareText(case.name, expectedText, actual, want)
            } catch (e: Exception) {
                CaseOutcome(case.name, false, 0, want, "Case '${case.name}': generation failed (${e.message ?: e.javaClass.simpleName}).")
            }
        }
        return SelfTestReport(format, SelfTestReport.Method.DECODED_TEXT, outcomes)
    }

    fun compareText(name: String, expectedText: String, actualText: String, mustMatch: Int): CaseOutcome {
        // A prefix of ids can end inside a multi-byte character: its decoded text then ends in
        // U+FFFD, which the runner (it emits only whole UTF-8 characters) never prints.
        val expected = expectedText.trimEnd('\uFFFD')
        val passed = actualText.startsWith(expected)
        val detail = if (passed) {
            "Case '$name': generated text starts with the host's first $mustMatch tokens."
        } else {
            "Case '$name': expected the text to start with \"${preview(expected)}\", got \"${preview(actualText)}\"."
        }
        return CaseOutcome(name, passed, if (passed) mustMatch else 0, mustMatch, detail)
    }

    private fun mustMatch(case: SelfTestCase) = minOf(case.mustMatch, case.expectedIds.size)

    private fun preview(s: String): String {
        val flat = s.replace("\n", "\\n")
        return if (flat.length > 40) flat.take(40) + "…" else flat
    }
}

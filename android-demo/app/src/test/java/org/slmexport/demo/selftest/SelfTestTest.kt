package org.slmexport.demo.selftest

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Test
import org.slmexport.demo.Fixtures
import org.slmexport.demo.bundle.ArtifactFormat
import org.slmexport.demo.bundle.ManifestParser
import org.slmexport.demo.bundle.SelfTestCase

class SelfTestTest {
    private val case = SelfTestCase("short", promptIds = listOf(5, 6, 7), expectedIds = listOf(10, 11, 12, 13), mustMatch = 3)

    @Test
    fun passesWhenTheFirstMustMatchIdsAgree() {
        var asked: Pair<List<Int>, Int>? = null
        val report = SelfTest.runIds("onnx", listOf(case)) { prompt, n ->
            asked = prompt to n
            listOf(10, 11, 12) // the 4th expected id is not required
        }
        assertEquals(listOf(5, 6, 7) to 3, asked)
        assertTrue(report.summary(), report.passed)
        assertEquals(3, report.outcomes.single().matched)
    }

    @Test
    fun idsAfterMustMatchMayDiffer() {
        val report = SelfTest.runIds("onnx", listOf(case)) { _, _ -> listOf(10, 11, 12, 99) }
        assertTrue(report.passed)
    }

    @Test
    fun failsOnTheFirstDifferentIdAndSaysWhich() {
        val report = SelfTest.runIds("onnx", listOf(case)) { _, _ -> listOf(10, 42, 12) }
        assertFalse(report.passed)
        val outcome = report.outcomes.single()
        assertEquals(1, outcome.matched)
        assertTrue(outcome.detail, outcome.detail.contains("id 2 is 42"))
        assertTrue(report.summary(), report.summary().startsWith("Self-test FAILED"))
    }

    @Test
    fun failsWhenGenerationStopsEarly() {
        val report = SelfTest.runIds("onnx", listOf(case)) { _, _ -> listOf(10) }
        assertFalse(report.passed)
        assertTrue(report.outcomes.single().detail.contains("stopped after 1"))
    }

    @Test
    fun aThrowingRuntimeFailsTheCaseNotTheApp() {
        val report = SelfTest.runIds("onnx", listOf(case, case.copy(name = "second"))) { _, _ -> error("native crash") }
        assertFalse(report.passed)
        assertEquals(2, report.outcomes.size)
        assertTrue(report.outcomes[0].detail.contains("native crash"))
    }

    @Test
    fun noCasesIsNotAPass() {
        val report = SelfTest.runIds("onnx", emptyList()) { _, _ -> emptyList() }
        assertFalse(report.passed)
    }

    @Test
    fun mustMatchIsCappedByExpectedLength() {
        val long = case.copy(mustMatch = 10)
        val report = SelfTest.runIds("onnx", listOf(long)) { _, n -> listOf(10, 11, 12, 13).take(n) }
        assertTrue(report.passed)
    }

    @Test
    fun textComparisonUsesDecodedPrefix() {
        val vocab = mapOf(5 to "Once", 6 to " upon", 7 to " a", 10 to " time", 11 to ",", 12 to " there", 13 to " was")
        val decode = { ids: List<Int> -> ids.joinToString("") { vocab.getValue(it) } }
        var prompt = ""
        var budget = Triple(0, 0, 0)
        val report = SelfTest.runText("executorch", listOf(case), decode) { p, promptIds, n ->
            prompt = p
            budget = Triple(promptIds, n, 0)
            " time, there lived"
        }
        assertEquals("Once upon a", prompt)
        assertEquals(3, budget.first)
        assertEquals(3, budget.second)
        assertTrue(report.summary(), report.passed)
        assertEquals(SelfTestReport.Method.DECODED_TEXT, report.method)
        assertTrue(report.summary().contains("compared as text"))

        val bad = SelfTest.runText("executorch", listOf(case), decode) { _, _, _ -> " times are" }
        assertFalse(bad.passed)
        assertTrue(bad.outcomes.single().detail, bad.outcomes.single().detail.contains("\" time, there\""))
    }

    @Test
    fun aSplitCharacterAtTheEndOfTheExpectedIdsIsIgnored() {
        val outcome = SelfTest.compareText("utf8", "caf\uFFFD", "café au lait", 4)
        assertTrue(outcome.detail, outcome.passed)
    }

    @Test
    fun fixtureCasesAreWellFormed() {
        val m = ManifestParser.parse(Fixtures.manifestJson())
        for (format in ArtifactFormat.entries) {
            val cases = m.artifact(format)!!.selfTest.cases
            assertTrue(cases.isNotEmpty())
            // Replaying the expected ids must pass: the comparison agrees with the host by construction.
            val byPrompt = cases.associate { it.promptIds to it.expectedIds }
            val report = SelfTest.runIds(format.key, cases) { prompt, n -> byPrompt.getValue(prompt).take(n) }
            assertTrue(report.summary(), report.passed)
        }
    }
}

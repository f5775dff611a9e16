package org.slmexport.demo.metrics

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Test

class TokensPerSecondTest {
    private var now = 0L
    private fun meter() = TokensPerSecond { now }

    @Test
    fun rateStartsAtTheFirstToken() {
        val m = meter()
        now = 0
        m.start()
        now = 500_000_000 // prefill: 0.5 s to the first token
        m.onTokens()
        assertNull(m.rate)
        assertEquals(500.0, m.timeToFirstTokenMs!!, 1e-9)
        for (i in 1..10) {
            now += 100_000_000 // then one token every 0.1 s
            m.onTokens()
        }
        assertEquals(11, m.tokens)
        assertEquals(10.0, m.rate!!, 1e-9)
        assertEquals("11 tokens · 10.0 tok/s · first token 500 ms", m.format())
    }

    @Test
    fun startResets() {
        val m = meter()
        m.start()
        m.onTokens(3)
        m.start()
        assertEquals(0, m.tokens)
        assertNull(m.timeToFirstTokenMs)
        assertEquals("0 tokens", m.format())
    }

    @Test
    fun ignoresEmptyUpdates() {
        val m = meter()
        m.start()
        m.onTokens(0)
        assertEquals(0, m.tokens)
    }

    @Test
    fun parsesExecuTorchRunnerStats() {
        // The shape stats_to_json_string writes (extension/llm/runner/stats.h).
        val json = """{"prompt_tokens":8,"generated_tokens":20,"model_load_start_ms":0,"model_load_end_ms":0,""" +
            """"inference_start_ms":1000,"inference_end_ms":3100,"prompt_eval_end_ms":1100,"first_token_ms":1150,""" +
            """"aggregate_sampling_time_ms":4,"SCALING_FACTOR_UNITS_PER_SECOND":1000}"""
        val s = RunnerStats.parse(json)!!
        assertEquals(20L, s.generatedTokens)
        assertEquals(10.0, s.decodeTokensPerSecond!!, 1e-9)
        assertEquals(80.0, s.prefillTokensPerSecond!!, 1e-9)
        assertEquals(150L, s.timeToFirstTokenMs)
        assertEquals("runner: 8 prompt + 20 generated tokens · prefill 80.0 tok/s · decode 10.0 tok/s · first token 150 ms", s.format())
    }

    @Test
    fun badStatsAreIgnored() {
        assertNull(RunnerStats.parse("not json"))
        assertNull(RunnerStats.parse("{}")!!.decodeTokensPerSecond)
    }
}

package org.slmexport.demo.core

/*
 * The chat logic of the app that needs no Android API: the portable chat template, stop handling
 * and history trimming. Plain Kotlin (this source set uses only the Kotlin standard library), so
 * .ci/run compiles it and runs its tests with kotlinc on a machine without the Android SDK, against
 * the vectors slm-export writes; Gradle builds the same files into the app.
 */

data class ChatMessage(val role: String, val content: String)

data class Affix(val prefix: String, val suffix: String)

/**
 * The manifest's chat.portable: the template as strings. Rendering is concatenation: [prefix],
 * the [defaultSystem] turn when the conversation has no system message, each message between its
 * role's prefix and suffix, then [generationPrompt] when asking for a reply. slm-export derived it
 * from the Jinja template and checked it renders the test conversations identically.
 */
class PortableTemplate(
    val prefix: String,
    val roles: Map<String, Affix>,
    val generationPrompt: String,
    val defaultSystem: String?,
) {
    /** False when the template has no turn of its own for a system prompt (the app hides the field). */
    val supportsSystem: Boolean get() = "system" in roles

    fun render(messages: List<ChatMessage>, addGenerationPrompt: Boolean): String {
        val out = StringBuilder(prefix)
        val system = roles["system"]
        if (defaultSystem != null && system != null && messages.firstOrNull()?.role != "system") {
            out.append(system.prefix).append(defaultSystem).append(system.suffix)
        }
        for (message in messages) {
            val affix = roles[message.role]
                ?: throw IllegalArgumentException("this model's chat template has no '${message.role}' turn")
            out.append(affix.prefix).append(message.content).append(affix.suffix)
        }
        if (addGenerationPrompt) out.append(generationPrompt)
        return out.toString()
    }
}

/**
 * Hides stop tokens from a stream of text pieces. ExecuTorch's runner hands the app the stop
 * token's own text (e.g. "<|im_end|>") before it stops, and a piece may hold only part of it: text
 * that could still become a stop string is held back until it cannot. [push] returns the text safe
 * to show; [stopped] turns true once a whole stop string arrived (nothing after it is shown).
 */
class StopTextFilter(stopStrings: Collection<String>) {
    private val stops = stopStrings.filter { it.isNotEmpty() }
    private val pending = StringBuilder()

    var stopped: Boolean = false
        private set

    fun push(piece: String): String {
        if (stopped) return ""
        pending.append(piece)
        val text = pending.toString()
        val hit = stops.mapNotNull { s -> text.indexOf(s).takeIf { it >= 0 } }.minOrNull()
        if (hit != null) {
            stopped = true
            pending.setLength(0)
            return text.substring(0, hit)
        }
        // keep the longest tail that is a prefix of some stop string
        var keep = 0
        for (s in stops) {
            for (n in minOf(s.length - 1, text.length) downTo 1) {
                if (n > keep && text.endsWith(s.substring(0, n))) keep = n
            }
        }
        pending.setLength(0)
        pending.append(text, text.length - keep, text.length)
        return text.substring(0, text.length - keep)
    }

    /** The held-back text when generation ended without a stop string (it was not one). */
    fun flush(): String {
        val rest = if (stopped) "" else pending.toString()
        pending.setLength(0)
        return rest
    }
}

/** Stop ids: the manifest's chat.stop_token_ids (also every artifact's eos ids). */
class StopTokens(ids: Collection<Int>) {
    private val ids = ids.toSet()

    fun isStop(id: Int): Boolean = id in ids
}

/** What [HistoryTrimmer.fit] kept, and how many earlier messages it dropped. */
data class Trimmed(val messages: List<ChatMessage>, val dropped: Int)

/**
 * Keeps a conversation inside the model's context: while the prompt's tokens plus the room for
 * the reply exceed the context, the oldest exchange (a user message and the replies up to the next
 * user message) is dropped; the system message always stays, and so does the newest user message.
 */
object HistoryTrimmer {
    fun fit(messages: List<ChatMessage>, contextTokens: Int, replyTokens: Int, countTokens: (List<ChatMessage>) -> Int): Trimmed {
        val system = messages.takeWhile { it.role == "system" }
        var turns = messages.drop(system.size)
        var dropped = 0
        while (countTokens(system + turns) + replyTokens > contextTokens) {
            val nextUser = turns.withIndex().drop(1).firstOrNull { it.value.role == "user" }?.index ?: break
            turns = turns.drop(nextUser)
            dropped += nextUser
        }
        return Trimmed(system + turns, dropped)
    }
}

import Foundation

/// One message of a conversation (roles: system, user, assistant).
struct ChatMessage: Equatable, Sendable, Identifiable {
    let id = UUID()
    var role: String
    var content: String

    static func == (a: ChatMessage, b: ChatMessage) -> Bool { a.role == b.role && a.content == b.content }
}

/// The manifest's `chat.portable`: the model's chat template as strings. Rendering is
/// concatenation: `prefix`, the default system turn when the conversation has no system message,
/// each message between its role's prefix and suffix, then `generationPrompt` to ask for a reply.
/// slm-export derived it from the Jinja template and checked that it renders the test
/// conversations identically (the same vectors the unit tests read).
struct PortableTemplate: Equatable, Sendable {
    var prefix: String
    var roles: [String: (prefix: String, suffix: String)]
    var generationPrompt: String
    var defaultSystem: String?

    init(prefix: String, roles: [String: (prefix: String, suffix: String)], generationPrompt: String, defaultSystem: String?) {
        self.prefix = prefix
        self.roles = roles
        self.generationPrompt = generationPrompt
        self.defaultSystem = defaultSystem
    }

    init(_ info: Manifest.PortableTemplate) {
        self.init(prefix: info.prefix, roles: info.roles.mapValues { (prefix: $0.prefix, suffix: $0.suffix) },
                  generationPrompt: info.generationPrompt, defaultSystem: info.defaultSystem)
    }

    /// False when the template has no turn of its own for a system prompt (the app hides the field).
    var supportsSystem: Bool { roles["system"] != nil }

    func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
        var out = prefix
        if let defaultSystem, let system = roles["system"], messages.first?.role != "system" {
            out += system.prefix + defaultSystem + system.suffix
        }
        for message in messages {
            guard let affix = roles[message.role] else { throw ChatError.roleNotInTemplate(message.role) }
            out += affix.prefix + message.content + affix.suffix
        }
        if addGenerationPrompt { out += generationPrompt }
        return out
    }

    static func == (a: PortableTemplate, b: PortableTemplate) -> Bool {
        a.prefix == b.prefix && a.generationPrompt == b.generationPrompt && a.defaultSystem == b.defaultSystem
            && a.roles.keys.sorted() == b.roles.keys.sorted()
            && a.roles.allSatisfy { key, value in b.roles[key].map { $0 == value } ?? false }
    }
}

enum ChatError: LocalizedError, Equatable {
    case roleNotInTemplate(String)

    var errorDescription: String? {
        switch self {
        case .roleNotInTemplate(let role): return "This model's chat template has no '\(role)' turn."
        }
    }
}

/// Keeps a conversation inside the model's context: while the prompt's tokens plus the room for
/// the reply exceed the context, the oldest exchange (a user message and the replies up to the
/// next user message) is dropped; the system message always stays, and so does the newest user
/// message.
enum HistoryTrimmer {
    static func fit(_ messages: [ChatMessage], contextTokens: Int, replyTokens: Int,
                    countTokens: ([ChatMessage]) throws -> Int) rethrows -> (messages: [ChatMessage], dropped: Int) {
        let system = Array(messages.prefix { $0.role == "system" })
        var turns = Array(messages.dropFirst(system.count))
        var dropped = 0
        while try countTokens(system + turns) + replyTokens > contextTokens {
            guard let nextUser = turns.indices.dropFirst().first(where: { turns[$0].role == "user" }) else { break }
            turns.removeFirst(nextUser)
            dropped += nextUser
        }
        return (system + turns, dropped)
    }
}

import Foundation

/// `SLMDemo --self-test`: what the app does after loading a new bundle, without the UI, for CI
/// (.github/workflows/ios-demo.yml launches the built app in a simulator with this argument).
/// Finds and verifies the bundle, runs the tokenizer check and every runtime's golden cases,
/// generates a few tokens from a text prompt with each runtime, does the same for each encoder
/// (the bundle itself or its companions: WordPiece tokenizer check, golden cases, one search or
/// classification or answer), prints one `SLM_SELF_TEST` line per result and a final
/// `SLM_SELF_TEST_RESULT: PASS|FAIL`, then exits with 0 or 1.
extension AppModel {
    static let headlessArgument = "--self-test"

    static var isHeadlessSelfTest: Bool { CommandLine.arguments.contains(headlessArgument) }

    func runHeadlessSelfTest() async {
        var failures: [String] = []
        func say(_ line: String) {
            print("SLM_SELF_TEST \(line)")
            fflush(stdout)
        }

        await loadBundle()  // verifies, then runs the tokenizer check and any golden test not run before
        switch phase {
        case .ready:
            break
        case .missing:
            failures.append("no bundle")
            say("bundle: none found (\(BundleLocator.candidates().map(\.url.path).joined(separator: ", ")))")
        case .failed(let message):
            failures.append("bundle")
            say("bundle: \(message)")
        case .idle, .verifying:
            failures.append("bundle not loaded")
        }

        if phase == .ready, let manifest, let location {
            say("bundle: \(manifest.model.name), \(location.sourceDescription), \(location.url.path)")
            say("verification: PASS (\(verification?.checkedFiles ?? 0) files\(verifiedFromCache ? ", cached" : ""))")
            if let tokenizer = tokenizerSelfTest {
                say("tokenizer: \(tokenizer.headline)")
                for c in tokenizer.cases where !c.passed {
                    say("  tokenizer case \(c.text.debugDescription): expected \(c.expectedIds), got \(c.gotIds)")
                }
                if !tokenizer.passed { failures.append("tokenizer") }
            }
            for kind in availableRuntimes {
                if selfTests[kind] == nil { await runSelfTest(kind) }
                guard let report = selfTests[kind] else {
                    failures.append(kind.rawValue)
                    continue
                }
                say("\(kind.rawValue) golden: \(report.headline) (\(String(format: "%.1f", report.seconds)) s)")
                for c in report.cases { say("  \(c.summary); got \(c.generatedIds)") }
                if !report.passed { failures.append("\(kind.rawValue) golden") }

                do {
                    let (text, tokens, rate) = try await smokeGeneration(kind)
                    say("\(kind.rawValue) generate: \(tokens) tokens, \(String(format: "%.1f", rate)) tok/s: \(text.debugDescription)")
                    if tokens == 0 { failures.append("\(kind.rawValue) generate (no tokens)") }
                } catch {
                    say("\(kind.rawValue) generate: FAIL \(Readable.message(for: error))")
                    failures.append("\(kind.rawValue) generate")
                }
            }
            for problem in encoderProblems {
                say("encoder: FAIL \(problem)")
                failures.append("encoder")
            }
            for encoder in encoders {
                failures += await headlessEncoderSelfTest(encoder, say: say)
            }
        }

        say("done")
        print("SLM_SELF_TEST_RESULT: \(failures.isEmpty ? "PASS" : "FAIL \(failures.joined(separator: ", "))")")
        fflush(stdout)
        exit(failures.isEmpty ? 0 : 1)
    }

    /// An encoder's tokenizer check and golden cases per runtime (run at load unless run on this
    /// bundle before, then again here for the details), and one use of its screen per runtime.
    private func headlessEncoderSelfTest(_ encoder: EncoderModel, say: (String) -> Void) async -> [String] {
        var failures: [String] = []
        let name = "\(encoder.role.manifestName) (\(encoder.companionPath.map { "\($0)/" } ?? "bundle"))"
        say("\(name): \(encoder.sourceLine)")
        if encoder.tokenizerSelfTest == nil { encoder.runTokenizerSelfTest() }
        if let tokenizer = encoder.tokenizerSelfTest {
            say("\(name) tokenizer (WordPiece): \(tokenizer.headline)")
            for c in tokenizer.cases where !c.passed {
                say("  tokenizer case \(c.text.debugDescription): expected \(c.expectedIds), got \(c.gotIds)")
            }
            if !tokenizer.passed { failures.append("\(name) tokenizer") }
        }
        for kind in encoder.availableRuntimes {
            if encoder.selfTests[kind] == nil { await encoder.runSelfTest(kind) }
            guard let report = encoder.selfTests[kind] else {
                failures.append("\(name) \(kind.rawValue)")
                continue
            }
            say("\(name) \(kind.rawValue) golden: \(report.headline) (\(String(format: "%.1f", report.seconds)) s)")
            for c in report.cases { say("  \(c.summary)") }
            if !report.passed { failures.append("\(name) \(kind.rawValue) golden") }

            encoder.runtime = kind
            let line = await encoder.headlessSmoke()
            say("\(name) \(kind.rawValue) \(line.text)")
            if !line.passed { failures.append("\(name) \(kind.rawValue) \(encoder.role.title.lowercased())") }
        }
        return failures
    }

    /// A short greedy generation from text, through the same path as the Generate button.
    private func smokeGeneration(_ kind: RuntimeKind) async throws -> (String, Int, Double) {
        let engine = try await self.engine(for: kind)
        let options = GenerationOptions(maxNewTokens: 16, temperature: 0, seed: 0)
        return try await Task.detached(priority: .userInitiated) {
            let collected = EventCollector()
            try engine.generate(prompt: "def add(a, b):", options: options, stop: StopFlag()) { collected.add($0) }
            return collected.result
        }.value
    }
}

/// Collects generation events from the engine's thread.
private final class EventCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var text = ""
    private var tokens = 0
    private var rate = 0.0

    func add(_ event: GenerationEvent) {
        lock.lock()
        defer { lock.unlock() }
        switch event {
        case .text(let piece): text += piece
        case let .progress(count, tokensPerSecond):
            tokens = count
            rate = tokensPerSecond
        case .prefill, .finished: break
        }
    }

    var result: (String, Int, Double) {
        lock.lock()
        defer { lock.unlock() }
        return (text, tokens, rate)
    }
}

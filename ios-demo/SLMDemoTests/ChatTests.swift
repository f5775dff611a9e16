import XCTest

/// The portable chat template against the vectors slm-export writes (Fixtures/chat_vectors.json:
/// the manifest's chat section for a ChatML template as SmolLM2 ships it, Llama 3's and Gemma's;
/// written by tests/chat_vectors.py, which the Python suite keeps current), history trimming and
/// top-p sampling.
final class ChatTests: XCTestCase {
    private struct Vectors: Decodable {
        var styles: [String: Manifest.ChatInfo]
    }

    private func styles() throws -> [String: Manifest.ChatInfo] {
        try JSONDecoder().decode(Vectors.self, from: Fixtures.data("chat_vectors")).styles
    }

    func testPortableTemplateRendersEveryVectorAsTheExporter() throws {
        let styles = try styles()
        XCTAssertEqual(Set(styles.keys), ["chatml", "gemma", "llama3"])
        var checked = 0
        for (style, chat) in styles {
            let template = PortableTemplate(try XCTUnwrap(chat.portable, style))
            for vector in chat.vectors {
                guard let text = vector.text else { continue }
                let messages = vector.messages.map { ChatMessage(role: $0.role, content: $0.content) }
                guard messages.allSatisfy({ template.roles[$0.role] != nil }) else { continue }
                XCTAssertEqual(try template.render(messages, addGenerationPrompt: vector.addGenerationPrompt), text,
                               "\(style) \(vector.name)")
                checked += 1
            }
        }
        XCTAssertGreaterThanOrEqual(checked, 16)
    }

    func testATemplateWithoutASystemTurnRefusesASystemMessage() throws {
        let gemma = PortableTemplate(try XCTUnwrap(try styles()["gemma"]?.portable))
        XCTAssertFalse(gemma.supportsSystem)
        XCTAssertThrowsError(try gemma.render([ChatMessage(role: "system", content: "x")], addGenerationPrompt: true))
    }

    func testTheDefaultSystemPromptAppearsOnlyWithoutAGivenOne() throws {
        let chatml = PortableTemplate(try XCTUnwrap(try styles()["chatml"]?.portable))
        let own = try chatml.render([ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "hi")],
                                    addGenerationPrompt: true)
        XCTAssertEqual(own, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertTrue(try chatml.render([ChatMessage(role: "user", content: "hi")], addGenerationPrompt: true)
            .hasPrefix("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"))
    }

    func testStopIdsHoldTheEndOfTurnToken() throws {
        for (style, chat) in try styles() {
            XCTAssertGreaterThanOrEqual(chat.stopTokenIds.count, 2, style)  // the tokenizer's eos and the end of turn
            XCTAssertNotNil(chat.endOfTurnToken, style)
            XCTAssertFalse(chat.addSpecialTokens)
            XCTAssertEqual(chat.bosAddedByRuntime, 0)
        }
    }

    func testHistoryIsTrimmedOldestExchangeFirstKeepingTheSystemPrompt() {
        let history = ["S", "u1", "a1", "u2", "a2", "u3"].enumerated().map { i, text in
            ChatMessage(role: i == 0 ? "system" : (i % 2 == 1 ? "user" : "assistant"), content: text)
        }
        let tokens = { (messages: [ChatMessage]) in messages.count * 10 }
        XCTAssertEqual(HistoryTrimmer.fit(history, contextTokens: 100, replyTokens: 40, countTokens: tokens).dropped, 0)
        let trimmed = HistoryTrimmer.fit(history, contextTokens: 80, replyTokens: 40, countTokens: tokens)
        XCTAssertEqual(trimmed.messages.map(\.content), ["S", "u2", "a2", "u3"])
        XCTAssertEqual(trimmed.dropped, 2)
        let newest = HistoryTrimmer.fit(history, contextTokens: 30, replyTokens: 20, countTokens: tokens)
        XCTAssertEqual(newest.messages.map(\.content), ["S", "u3"])
    }

    func testTopPKeepsTheSmallestSetReachingIt() {
        let logits: [Float] = [2, 1, 0, -1]  // softmax: 0.64, 0.24, 0.09, 0.03
        let kept = Sampler.nucleus(logits, temperature: 1, topP: 0.8, topK: nil)
        XCTAssertEqual(kept.map(\.isFinite), [true, true, false, false])
        XCTAssertEqual(Sampler.nucleus(logits, temperature: 1, topP: 1, topK: 1).map(\.isFinite), [true, false, false, false])
        var sampler = Sampler(temperature: 1, seed: 7, topP: 0.5)
        for _ in 0..<50 { XCTAssertEqual(sampler.next(logits), 0) }  // only the top id reaches 0.5
    }
}

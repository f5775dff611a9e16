import SwiftUI

/// The screen of one encoder, after its task: Search (feature extraction), Classify (sequence or
/// token classification) or Ask (question answering).
struct EncoderScreen: View {
    @ObservedObject var encoder: EncoderModel

    var body: some View {
        switch encoder.role {
        case .search: SearchView(encoder: encoder)
        case .classify: ClassifyView(encoder: encoder)
        case .answer: AskView(encoder: encoder)
        }
    }
}

/// What every encoder screen starts with: the bundle's state, which encoder this is, the runtime
/// picker (Core ML / ExecuTorch, as the chat screen has), the golden self-test's verdict, and
/// what the model is doing.
struct EncoderHeader: View {
    @ObservedObject var encoder: EncoderModel

    var body: some View {
        VStack(alignment: .leading, spacing: 8) {
            BundleStatusBanner()
            Text(encoder.sourceLine).font(.caption).foregroundStyle(.secondary)
            if !encoder.availableRuntimes.isEmpty {
                Picker("Runtime", selection: $encoder.runtime) {
                    ForEach(encoder.availableRuntimes) { kind in
                        Text(kind.displayName).tag(kind)
                    }
                }
                .pickerStyle(.segmented)
                .disabled(encoder.isBusy)
                HStack {
                    Text(encoder.runtime == .coreml ? "ML Program, tokenized by the app's WordPiece"
                        : "XNNPACK, ExecuTorch's Module, tokenized by the app's WordPiece")
                        .font(.caption)
                        .foregroundStyle(.secondary)
                    Spacer()
                    if encoder.runtime == .coreml {
                        Picker("Compute units", selection: $encoder.computeUnits) {
                            ForEach(ComputeUnitsChoice.allCases) { choice in
                                Text(choice.label).tag(choice)
                            }
                        }
                        .pickerStyle(.menu)
                        .disabled(encoder.isBusy)
                    }
                }
            }
            EncoderVerdictLine(encoder: encoder)
            if let problem = encoder.tokenizerError {
                ErrorBanner(message: "The app cannot tokenize for this encoder: \(problem)")
            }
            if let error = encoder.errorMessage {
                ErrorBanner(message: error)
            }
            if !encoder.status.isEmpty || encoder.isRunning {
                HStack(spacing: 6) {
                    ProgressView()
                    Text(encoder.status).font(.caption).foregroundStyle(.secondary)
                }
            }
        }
    }
}

/// "Self-test: PASS (Core ML)" for the chosen runtime, in one line.
private struct EncoderVerdictLine: View {
    @ObservedObject var encoder: EncoderModel

    var body: some View {
        let kind = encoder.runtime
        Group {
            if encoder.selfTestRunning == kind {
                Label("Self-test running…", systemImage: "hourglass")
            } else if let report = encoder.selfTests[kind] {
                Label("Self-test \(report.headline)", systemImage: report.passed ? "checkmark.seal.fill" : "xmark.seal.fill")
                    .foregroundStyle(report.passed ? .green : .red)
            } else if let passed = encoder.previousSelfTest[kind] {
                Label(passed ? "Self-test PASS when this bundle was first loaded" : "Self-test FAIL when first loaded (see Self-test)",
                      systemImage: passed ? "checkmark.seal.fill" : "xmark.seal.fill")
                    .foregroundStyle(passed ? .green : .red)
            }
        }
        .font(.caption)
    }
}

/// Timings in milliseconds, as "label 12 ms".
private func milliseconds(_ value: Double?) -> String {
    value.map { String(format: "%.0f ms", $0) } ?? "–"
}

/// Search: the built-in passages (exporter/data/encoder_texts.json) are embedded once per runtime,
/// then each query; the passages are ranked by cosine to the query, with their scores.
struct SearchView: View {
    @ObservedObject var encoder: EncoderModel

    var body: some View {
        NavigationStack {
            VStack(alignment: .leading, spacing: 12) {
                EncoderHeader(encoder: encoder)
                HStack {
                    TextField("Query", text: $encoder.query)
                        .textFieldStyle(.roundedBorder)
                        .autocorrectionDisabled()
                        .submitLabel(.search)
                        .onSubmit { encoder.search() }
                    Button {
                        encoder.search()
                    } label: {
                        Label("Search", systemImage: "magnifyingglass")
                    }
                    .buttonStyle(.borderedProminent)
                    .disabled(!encoder.canRun || encoder.query.isEmpty || encoder.passages.isEmpty)
                }
                HStack(spacing: 12) {
                    Text("\(encoder.passages.count) passages")
                    Text("indexed in \(milliseconds(encoder.indexMilliseconds))")
                    Text("query \(milliseconds(encoder.queryMilliseconds))")
                }
                .font(.caption.monospacedDigit())
                .foregroundStyle(.secondary)
                List(encoder.hits) { hit in
                    HStack(alignment: .firstTextBaseline, spacing: 10) {
                        Text(String(format: "%.3f", hit.cosine))
                            .font(.callout.monospacedDigit())
                            .foregroundStyle(hit.id == encoder.hits.first?.id ? Color.accentColor : Color.secondary)
                        Text(hit.passage).font(.callout)
                    }
                }
                .listStyle(.plain)
                .overlay {
                    if encoder.hits.isEmpty {
                        Text(encoder.passages.isEmpty
                             ? "The built-in passages are missing (encoder_texts.json)."
                             : "Type a query: the \(encoder.passages.count) built-in passages are ranked by cosine similarity.")
                            .font(.callout)
                            .foregroundStyle(.secondary)
                            .multilineTextAlignment(.center)
                            .padding()
                    }
                }
            }
            .padding()
            .navigationTitle("Search")
        }
    }
}

/// Classify: a text's labels with their softmax scores, best first (sequence classification), or
/// each token's label (token classification).
struct ClassifyView: View {
    @ObservedObject var encoder: EncoderModel

    var body: some View {
        NavigationStack {
            VStack(alignment: .leading, spacing: 12) {
                EncoderHeader(encoder: encoder)
                TextField("Text", text: $encoder.classifyText, axis: .vertical)
                    .lineLimit(2...6)
                    .textFieldStyle(.roundedBorder)
                HStack {
                    Button {
                        encoder.classify()
                    } label: {
                        Label("Classify", systemImage: "tag")
                    }
                    .buttonStyle(.borderedProminent)
                    .disabled(!encoder.canRun || encoder.classifyText.isEmpty)
                    Spacer()
                    Text(milliseconds(encoder.classifyMilliseconds)).font(.caption.monospacedDigit()).foregroundStyle(.secondary)
                }
                List {
                    ForEach(Array(encoder.labelScores.enumerated()), id: \.offset) { _, score in
                        VStack(alignment: .leading, spacing: 2) {
                            HStack {
                                Text(score.label)
                                Spacer()
                                Text(String(format: "%.4f", score.score)).font(.callout.monospacedDigit())
                            }
                            ProgressView(value: min(max(score.score, 0), 1))
                        }
                    }
                    ForEach(encoder.tokenLabels) { token in
                        HStack {
                            Text(token.text).font(.body.monospaced())
                            Spacer()
                            Text(token.label)
                            Text(String(format: "%.3f", token.score)).font(.caption.monospacedDigit()).foregroundStyle(.secondary)
                        }
                    }
                }
                .listStyle(.plain)
            }
            .padding()
            .navigationTitle("Classify")
        }
    }
}

/// Ask: a question and a passage (defaults: the exporter's question-answering examples); the
/// answer is the best span of passage tokens, highlighted in the passage through the tokens'
/// offsets.
struct AskView: View {
    @ObservedObject var encoder: EncoderModel

    var body: some View {
        NavigationStack {
            ScrollView {
                VStack(alignment: .leading, spacing: 12) {
                    EncoderHeader(encoder: encoder)
                    if !encoder.qaExamples.isEmpty {
                        Menu {
                            ForEach(encoder.qaExamples, id: \.self) { example in
                                Button(example.question) { encoder.useExample(example) }
                            }
                        } label: {
                            Label("Examples", systemImage: "text.book.closed")
                        }
                        .disabled(encoder.isBusy)
                    }
                    TextField("Question", text: $encoder.question, axis: .vertical)
                        .lineLimit(1...3)
                        .textFieldStyle(.roundedBorder)
                    TextField("Passage", text: $encoder.context, axis: .vertical)
                        .lineLimit(3...10)
                        .textFieldStyle(.roundedBorder)
                    HStack {
                        Button {
                            encoder.ask()
                        } label: {
                            Label("Ask", systemImage: "questionmark.bubble")
                        }
                        .buttonStyle(.borderedProminent)
                        .disabled(!encoder.canRun || encoder.question.isEmpty || encoder.context.isEmpty)
                        Spacer()
                        Text(milliseconds(encoder.askMilliseconds)).font(.caption.monospacedDigit()).foregroundStyle(.secondary)
                    }
                    if let answer = encoder.answer {
                        VStack(alignment: .leading, spacing: 6) {
                            Text("Answer: \(answer.text)").font(.headline)
                            Text(String(format: "tokens %ld…%ld, score %.2f (start + end logit)",
                                        answer.startToken, answer.endToken, answer.score))
                                .font(.caption.monospacedDigit())
                                .foregroundStyle(.secondary)
                            Text(AskView.highlighted(answer))
                                .textSelection(.enabled)
                                .padding(8)
                                .frame(maxWidth: .infinity, alignment: .leading)
                                .background(Color(.secondarySystemBackground), in: RoundedRectangle(cornerRadius: 8))
                            if let note = encoder.askNote {
                                Text(note).font(.caption).foregroundStyle(.orange)
                            }
                        }
                    }
                }
                .padding()
            }
            .navigationTitle("Ask")
        }
    }

    /// The passage with the answer's characters (its tokens' UTF-16 offsets) highlighted.
    static func highlighted(_ answer: EncoderModel.Answer) -> AttributedString {
        let passage = answer.passage as NSString
        let range = NSIntersectionRange(answer.range, NSRange(location: 0, length: passage.length))
        let before = AttributedString(passage.substring(to: range.location))
        var hit = AttributedString(passage.substring(with: range))
        hit.backgroundColor = Color.yellow.opacity(0.45)
        hit.font = Font.body.bold()
        let after = AttributedString(passage.substring(from: NSMaxRange(range)))
        return before + hit + after
    }
}

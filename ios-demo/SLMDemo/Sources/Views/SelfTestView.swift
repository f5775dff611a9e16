import SwiftUI

/// The golden self-test per runtime (pass/fail, each case's ids) and the tokenizer check, for the
/// decoder and for each encoder (the bundle itself or its companions).
struct SelfTestView: View {
    @EnvironmentObject private var model: AppModel

    var body: some View {
        NavigationStack {
            List {
                if model.manifest == nil || model.hasDecoder {
                    decoderSections
                }
                ForEach(model.encoders) { encoder in
                    EncoderSelfTestSections(encoder: encoder)
                }
            }
            .navigationTitle("Self-test")
        }
    }

    @ViewBuilder
    private var decoderSections: some View {
        Section {
            Text("After loading a new bundle the app runs each artifact's golden cases once: greedy "
                + "generation from the manifest's prompt ids must reproduce the first must_match ids the "
                + "exporter got on the host runtime. must_match stops before the first step the host won "
                + "by less than 1 logit, where ARM and x86 kernels may legitimately differ.")
                .font(.footnote)
                .foregroundStyle(.secondary)
        }

        ForEach(model.availableRuntimes) { kind in
            RuntimeSelfTestSection(kind: kind)
        }

        Section("Tokenizer (swift-transformers)") {
            if let report = model.tokenizerSelfTest {
                VerdictRow(passed: report.cases.isEmpty && report.error == nil ? nil : report.passed,
                           text: report.headline)
                ForEach(report.cases) { c in
                    VStack(alignment: .leading, spacing: 4) {
                        HStack {
                            Image(systemName: c.passed ? "checkmark.circle.fill" : "xmark.octagon.fill")
                                .foregroundStyle(c.passed ? .green : .red)
                            Text(c.text.debugDescription).font(.caption.monospaced()).lineLimit(2)
                        }
                        if !c.passed {
                            IdsLine(label: "expected", ids: c.expectedIds)
                            IdsLine(label: "got", ids: c.gotIds)
                            if let at = c.firstDifference { Text("first difference at index \(at)").font(.caption2) }
                        }
                    }
                }
            } else {
                Text("Runs when a bundle is loaded.").foregroundStyle(.secondary)
            }
        }
    }
}

/// An encoder's checks: its tokenizer (this app's WordPiece against the manifest's
/// tokenizer.self_test) and, per runtime, its golden cases (each case's ids run alone: embeddings
/// by cosine, labels by argmax, answers by span).
private struct EncoderSelfTestSections: View {
    @ObservedObject var encoder: EncoderModel

    private var title: String {
        "\(encoder.role.title) encoder" + (encoder.companionPath.map { " (companion \($0)/)" } ?? "")
    }

    var body: some View {
        Section {
            Text("Each golden case's ids run alone (no padding): an embedding must reach the artifact's parity "
                + "cosine_min against the host's, labels the same argmax, an answer the same span.")
                .font(.footnote)
                .foregroundStyle(.secondary)
        } header: {
            Text(title)
        }
        ForEach(encoder.availableRuntimes) { kind in
            Section("\(title): \(kind.displayName)") {
                if encoder.selfTestRunning == kind {
                    HStack { ProgressView(); Text("Running…") }
                } else if let report = encoder.selfTests[kind] {
                    VerdictRow(passed: report.passed, text: report.headline)
                    Text(String(format: "%@ · %.1f s", report.artifactPath, report.seconds))
                        .font(.caption).foregroundStyle(.secondary)
                    ForEach(report.cases) { c in
                        HStack(alignment: .firstTextBaseline) {
                            Image(systemName: c.passed ? "checkmark.circle.fill" : "xmark.octagon.fill")
                                .foregroundStyle(c.passed ? .green : .red)
                            Text(c.summary).font(.callout)
                        }
                    }
                } else if let passed = encoder.previousSelfTest[kind] {
                    VerdictRow(passed: passed, text: passed
                        ? "PASS when this bundle was first loaded"
                        : "FAIL when this bundle was first loaded: run it again for the details")
                } else {
                    Text("Not run yet.").foregroundStyle(.secondary)
                }
                Button("Run \(kind.displayName) self-test") {
                    Task { await encoder.runSelfTest(kind) }
                }
                .disabled(encoder.isBusy)
            }
        }
        Section("\(title): tokenizer (WordPiece)") {
            if let report = encoder.tokenizerSelfTest {
                VerdictRow(passed: report.cases.isEmpty && report.error == nil ? nil : report.passed, text: report.headline)
                ForEach(report.cases.filter { !$0.passed }) { c in
                    VStack(alignment: .leading, spacing: 4) {
                        Text(c.text.debugDescription).font(.caption.monospaced()).lineLimit(2)
                        IdsLine(label: "expected", ids: c.expectedIds)
                        IdsLine(label: "got", ids: c.gotIds)
                        if let at = c.firstDifference { Text("first difference at index \(at)").font(.caption2) }
                    }
                }
            } else {
                Text("Runs when the bundle is loaded.").foregroundStyle(.secondary)
            }
        }
    }
}

private struct RuntimeSelfTestSection: View {
    @EnvironmentObject private var model: AppModel
    var kind: RuntimeKind

    var body: some View {
        Section(kind.displayName) {
            if model.selfTestRunning == kind {
                HStack { ProgressView(); Text("Running…") }
            } else if let report = model.selfTests[kind] {
                VerdictRow(passed: report.passed, text: report.headline)
                Text(String(format: "%@ · %.1f s", report.artifactPath, report.seconds))
                    .font(.caption).foregroundStyle(.secondary)
                ForEach(report.cases) { c in
                    VStack(alignment: .leading, spacing: 4) {
                        HStack {
                            Image(systemName: c.passed ? "checkmark.circle.fill" : "xmark.octagon.fill")
                                .foregroundStyle(c.passed ? .green : .red)
                            Text(c.summary).font(.callout)
                        }
                        IdsLine(label: "prompt", ids: c.promptIds)
                        IdsLine(label: "expected", ids: c.expectedIds)
                        IdsLine(label: "got", ids: c.generatedIds)
                    }
                }
            } else if let passed = model.previousSelfTest[kind] {
                VerdictRow(passed: passed, text: passed
                    ? "PASS when this bundle was first loaded"
                    : "FAIL when this bundle was first loaded: run it again for the details")
            } else {
                Text("Not run yet.").foregroundStyle(.secondary)
            }
            Button("Run \(kind.displayName) self-test") {
                Task { await model.runSelfTest(kind) }
            }
            .disabled(model.phase != .ready || model.isBusy)
        }
    }
}

private struct VerdictRow: View {
    /// nil: nothing to judge.
    var passed: Bool?
    var text: String

    var body: some View {
        Label {
            Text(text).font(.headline)
        } icon: {
            switch passed {
            case .some(true): Image(systemName: "checkmark.seal.fill").foregroundStyle(.green)
            case .some(false): Image(systemName: "xmark.seal.fill").foregroundStyle(.red)
            case .none: Image(systemName: "minus.circle").foregroundStyle(.secondary)
            }
        }
    }
}

private struct IdsLine: View {
    var label: String
    var ids: [Int]

    var body: some View {
        Text("\(label): \(ids.map(String.init).joined(separator: " "))")
            .font(.caption2.monospaced())
            .foregroundStyle(.secondary)
            .lineLimit(3)
            .textSelection(.enabled)
    }
}

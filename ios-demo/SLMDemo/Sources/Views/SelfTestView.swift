import SwiftUI

/// The golden self-test per runtime (pass/fail, each case's ids) and the tokenizer check.
struct SelfTestView: View {
    @EnvironmentObject private var model: AppModel

    var body: some View {
        NavigationStack {
            List {
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
            .navigationTitle("Self-test")
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

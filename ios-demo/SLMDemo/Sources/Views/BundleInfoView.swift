import SwiftUI

/// What is loaded: where from, whether every digest matched, the model, its artifacts with their
/// parity summaries, and how to side-load another bundle.
struct BundleInfoView: View {
    @EnvironmentObject private var model: AppModel

    var body: some View {
        NavigationStack {
            List {
                Section("Location") {
                    if let location = model.location {
                        Row("Source", location.sourceDescription)
                        Text(location.url.path).font(.caption2.monospaced()).textSelection(.enabled)
                    } else {
                        Text("No bundle found.").foregroundStyle(.secondary)
                    }
                    Button("Reload bundle") { Task { await model.loadBundle() } }
                        .disabled(model.isBusy)
                }

                Section("Verification") {
                    switch model.phase {
                    case .verifying(let fraction):
                        ProgressView("Hashing files…", value: fraction)
                    case .failed(let message):
                        ErrorBanner(message: message)
                    default:
                        EmptyView()
                    }
                    if let report = model.verification {
                        Row("Files", "\(report.checkedFiles), \(ByteCountFormatter.string(fromByteCount: report.checkedBytes, countStyle: .file))")
                        Row("sha256", report.passed
                            ? (model.verifiedFromCache ? "all match (verified earlier, files unchanged)" : "all match")
                            : "\(report.problems.count) problem(s)")
                        ForEach(report.problems, id: \.self) { problem in
                            Text(problem).font(.caption).foregroundStyle(.red)
                        }
                    }
                }

                if let manifest = model.manifest {
                    Section("Model") {
                        Row("Name", manifest.model.name)
                        Row("Family", manifest.model.family)
                        Row("Parameters", manifest.model.parameters.formatted())
                        Row("Vocabulary", manifest.model.vocabSize.formatted())
                        Row("Context (max_seq_len)", "\(manifest.model.maxSeqLen) tokens")
                        Row("bos / eos", "\(manifest.model.bosTokenId.map(String.init) ?? "none") / "
                            + manifest.model.eosTokenIds.map(String.init).joined(separator: ", "))
                        Row("Tokenizer", "\(manifest.tokenizer.path), special tokens \(manifest.addsSpecialTokens ? "added" : "not added")")
                        Row("Exported by", "slm-export \(manifest.generator.version) for \(manifest.target)")
                    }

                    Section("Artifacts") {
                        ForEach(manifest.artifacts, id: \.path) { artifact in
                            VStack(alignment: .leading, spacing: 2) {
                                Text("\(artifact.format) · \(artifact.quantization) · "
                                    + ByteCountFormatter.string(fromByteCount: artifact.bytes, countStyle: .file))
                                    .font(.headline)
                                Text(artifact.path).font(.caption.monospaced())
                                Text(BundleInfoView.paritySummary(artifact.parity))
                                    .font(.caption)
                                    .foregroundStyle(.secondary)
                                if let textTop1 = artifact.parity.textTop1 {
                                    Text(String(format: "held-out text: top-1 %.3f, perplexity %+.1f%%%@", textTop1,
                                                100 * (artifact.parity.pplChange ?? 0),
                                                artifact.search.map { " · chosen by auto from \($0.tried.count) tried" } ?? ""))
                                        .font(.caption)
                                        .foregroundStyle(.secondary)
                                }
                                if let loss = artifact.qualityLoss {
                                    Text("Below its quality gate, shipped with \(loss.acceptedWith): "
                                        + loss.failures.joined(separator: "; "))
                                        .font(.caption)
                                        .foregroundStyle(.red)
                                }
                                if RuntimeKind(rawValue: artifact.format) == nil {
                                    Text("Not run by this app (the iOS demo runs Core ML and ExecuTorch).")
                                        .font(.caption).foregroundStyle(.secondary)
                                }
                            }
                        }
                    }

                    if let encoder = manifest.encoder {
                        Section("Encoder") {
                            Row("Task", encoder.task)
                            Row("Inputs", encoder.inputs.joined(separator: ", "))
                            Row("Outputs", encoder.outputs.joined(separator: ", "))
                            if !encoder.labels.isEmpty { Row("Labels", encoder.labels.joined(separator: ", ")) }
                            if let pooling = encoder.pooling {
                                Row("Pooling", "\(pooling.mode)\(pooling.normalize ? ", normalized" : "") (\(pooling.source))")
                            }
                            Row("Input limit", "\(manifest.model.maxSeqLen) tokens")
                        }
                    }

                    if let companions = manifest.companions, !companions.isEmpty {
                        Section("Companions") {
                            ForEach(companions, id: \.path) { companion in
                                VStack(alignment: .leading, spacing: 2) {
                                    Text("\(companion.path)/ · \(companion.role) · \(companion.task)").font(.headline)
                                    if let loaded = model.encoders.first(where: { $0.companionPath == companion.path }) {
                                        Text("\(loaded.manifest.model.name): "
                                            + loaded.manifest.artifacts.map { "\($0.format) (\($0.quantization))" }.joined(separator: ", "))
                                            .font(.caption)
                                        ForEach(loaded.manifest.artifacts, id: \.path) { artifact in
                                            Text("\(artifact.path): " + BundleInfoView.paritySummary(artifact.parity))
                                                .font(.caption2)
                                                .foregroundStyle(.secondary)
                                        }
                                    }
                                    Text("manifest sha256 \(companion.manifestSha256.prefix(16))…, verified with the bundle")
                                        .font(.caption2.monospaced())
                                        .foregroundStyle(.secondary)
                                }
                            }
                        }
                    }

                    if !model.encoderProblems.isEmpty {
                        Section("Encoders not shown") {
                            ForEach(model.encoderProblems, id: \.self) { problem in
                                Text(problem).font(.caption).foregroundStyle(.red)
                            }
                        }
                    }

                    Section("Tools") {
                        ForEach(manifest.generator.tools.keys.sorted(), id: \.self) { name in
                            Row(name, manifest.generator.tools[name] ?? "")
                        }
                    }
                }

                Section("Side-load a bundle") {
                    Text(BundleLocator.missingBundleHelp)
                        .font(.caption.monospaced())
                        .textSelection(.enabled)
                }
            }
            .navigationTitle("Bundle")
        }
    }
}

extension BundleInfoView {
    /// One line of an artifact's parity figures: a decoder's (top-1, KL, greedy prefix) or an
    /// encoder's (cosine, neighbours, labels or spans).
    static func paritySummary(_ p: Manifest.ArtifactParity) -> String {
        var parts: [String] = []
        if let top1 = p.top1 { parts.append(String(format: "top-1 %.4f", top1)) }
        if let kl = p.klMean { parts.append(String(format: "KL %.2g", kl)) }
        if let greedy = p.greedyPrefixMin { parts.append(String(format: "greedy prefix %.2f", greedy)) }
        if let cosine = p.cosineMin { parts.append(String(format: "cosine min %.6f", cosine)) }
        if let agreement = p.neighbourAgreement { parts.append(String(format: "nearest neighbour %.3f", agreement)) }
        if let labels = p.labelAgreement { parts.append(String(format: "label agreement %.3f", labels)) }
        if let spans = p.spanMatch { parts.append(String(format: "span match %.3f", spans)) }
        if let maxAbs = p.maxAbs, p.top1 == nil { parts.append(String(format: "max abs %.2g", maxAbs)) }
        if let texts = p.texts { parts.append("\(texts) texts") }
        return "parity vs \(p.reference): " + parts.joined(separator: ", ")
    }
}

private struct Row: View {
    var title: String
    var value: String

    init(_ title: String, _ value: String) {
        self.title = title
        self.value = value
    }

    var body: some View {
        HStack(alignment: .firstTextBaseline) {
            Text(title)
            Spacer()
            Text(value).foregroundStyle(.secondary).multilineTextAlignment(.trailing)
        }
    }
}

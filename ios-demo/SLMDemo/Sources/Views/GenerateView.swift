import SwiftUI

/// Runtime picker, prompt, settings, Generate / Stop, and the streamed output with its speed.
struct GenerateView: View {
    @EnvironmentObject private var model: AppModel

    var body: some View {
        NavigationStack {
            VStack(alignment: .leading, spacing: 12) {
                BundleStatusBanner()

                if !model.availableRuntimes.isEmpty {
                    Picker("Runtime", selection: $model.runtime) {
                        ForEach(model.availableRuntimes) { kind in
                            Text(kind.displayName).tag(kind)
                        }
                    }
                    .pickerStyle(.segmented)
                    .disabled(model.isBusy)

                    HStack {
                        Text(model.runtime.detail)
                            .font(.caption)
                            .foregroundStyle(.secondary)
                        Spacer()
                        if model.runtime == .coreml {
                            Picker("Compute units", selection: $model.computeUnits) {
                                ForEach(ComputeUnitsChoice.allCases) { choice in
                                    Text(choice.label).tag(choice)
                                }
                            }
                            .pickerStyle(.menu)
                            .disabled(model.isBusy)
                        }
                    }
                }

                TextField("Prompt", text: $model.prompt, axis: .vertical)
                    .lineLimit(2...6)
                    .textFieldStyle(.roundedBorder)
                    .autocorrectionDisabled()
                    .textInputAutocapitalization(.never)
                    .disabled(model.isGenerating)

                Stepper("Max new tokens: \(model.maxNewTokens)", value: $model.maxNewTokens,
                        in: 1...model.maxTokenLimit, step: 8)
                    .disabled(model.isGenerating)

                HStack {
                    Text(model.temperature == 0 ? "Greedy" : String(format: "Temperature %.2f", model.temperature))
                        .frame(width: 140, alignment: .leading)
                    Slider(value: $model.temperature, in: 0...1.5, step: 0.05)
                        .disabled(model.isGenerating)
                }

                HStack {
                    Button {
                        model.generate()
                    } label: {
                        Label("Generate", systemImage: "play.fill")
                    }
                    .buttonStyle(.borderedProminent)
                    .disabled(!model.canGenerate)

                    Button(role: .destructive) {
                        model.stop()
                    } label: {
                        Label("Stop", systemImage: "stop.fill")
                    }
                    .buttonStyle(.bordered)
                    .disabled(!model.isGenerating)

                    Spacer()
                    if model.isGenerating || model.selfTestRunning != nil { ProgressView() }
                }

                StatsLine()

                if let error = model.errorMessage {
                    ErrorBanner(message: error)
                }

                ScrollViewReader { proxy in
                    ScrollView {
                        VStack(alignment: .leading, spacing: 0) {
                            Text(model.output.isEmpty ? " " : model.output)
                                .font(.body.monospaced())
                                .textSelection(.enabled)
                                .frame(maxWidth: .infinity, alignment: .leading)
                            Color.clear.frame(height: 1).id("bottom")
                        }
                        .padding(8)
                    }
                    .background(Color(.secondarySystemBackground), in: RoundedRectangle(cornerRadius: 8))
                    .onChange(of: model.output) {
                        proxy.scrollTo("bottom", anchor: .bottom)
                    }
                }
            }
            .padding()
            .navigationTitle("SLM Demo")
        }
    }
}

/// "N tokens · X tok/s · first token Y ms", and what the app is doing.
struct StatsLine: View {
    @EnvironmentObject private var model: AppModel

    var body: some View {
        VStack(alignment: .leading, spacing: 2) {
            HStack(spacing: 12) {
                Text("\(model.tokensGenerated) tokens")
                Text(String(format: "%.1f tok/s", model.tokensPerSecond))
                if let first = model.firstTokenSeconds {
                    Text(model.runtime == .coreml ? "prefill \(Int(first * 1000)) ms" : "first token \(Int(first * 1000)) ms")
                }
            }
            .font(.caption.monospacedDigit())
            if !model.status.isEmpty {
                Text(model.status).font(.caption).foregroundStyle(.secondary)
            }
        }
    }
}

/// The bundle's state in one line: which model, from where, verified or not.
struct BundleStatusBanner: View {
    @EnvironmentObject private var model: AppModel

    var body: some View {
        switch model.phase {
        case .idle:
            Label("Looking for a model bundle…", systemImage: "magnifyingglass").font(.callout)
        case .verifying(let fraction):
            VStack(alignment: .leading) {
                Text("Verifying the bundle's sha256 digests…").font(.callout)
                ProgressView(value: fraction)
            }
        case .missing:
            ErrorBanner(message: "No model bundle. See the Bundle tab for how to add one.")
        case .failed(let message):
            ErrorBanner(message: message)
        case .ready:
            if let manifest = model.manifest, let location = model.location {
                Label("\(manifest.model.name) · verified · \(location.sourceDescription)",
                      systemImage: "checkmark.shield")
                    .font(.callout)
                    .foregroundStyle(.green)
            }
        }
    }
}

struct ErrorBanner: View {
    var message: String

    var body: some View {
        Label {
            Text(message).textSelection(.enabled)
        } icon: {
            Image(systemName: "exclamationmark.triangle.fill")
        }
        .font(.callout)
        .foregroundStyle(.red)
        .frame(maxWidth: .infinity, alignment: .leading)
        .padding(8)
        .background(Color.red.opacity(0.1), in: RoundedRectangle(cornerRadius: 8))
    }
}

import SwiftUI

/// Runtime picker, generation settings, and either the chat (a chat model whose template the app
/// can apply) or the completion screen: prompt, Generate / Stop, and the streamed output with its speed.
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

                GenerationSettings()

                if model.chatTemplate != nil {
                    ChatPanel()
                } else {
                    if let why = model.chatUnsupported {
                        Text("This model's chat template cannot be applied by the app (\(why)); prompts are sent as plain text.")
                            .font(.caption)
                            .foregroundStyle(.red)
                    }
                    TextField("Prompt", text: $model.prompt, axis: .vertical)
                        .lineLimit(2...6)
                        .textFieldStyle(.roundedBorder)
                        .autocorrectionDisabled()
                        .textInputAutocapitalization(.never)
                        .disabled(model.isGenerating)

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
                    Text("prefill \(Int(first * 1000)) ms")
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

/// Reply length, temperature (0: greedy, as the host reference) and top-p.
struct GenerationSettings: View {
    @EnvironmentObject private var model: AppModel

    var body: some View {
        VStack(alignment: .leading, spacing: 4) {
            Stepper("Max new tokens: \(model.maxNewTokens)", value: $model.maxNewTokens,
                    in: 1...model.maxTokenLimit, step: 8)
            HStack {
                Text(model.temperature == 0 ? "Greedy" : String(format: "Temperature %.2f", model.temperature))
                    .frame(width: 140, alignment: .leading)
                Slider(value: $model.temperature, in: 0...1.5, step: 0.05)
            }
            HStack {
                Text(String(format: "Top-p %.2f", model.topP))
                    .frame(width: 140, alignment: .leading)
                Slider(value: $model.topP, in: 0.05...1, step: 0.05)
                    .disabled(model.temperature == 0)
            }
        }
        .disabled(model.isGenerating)
    }
}

/// A chat model's screen: the system prompt (when the template has a turn for it), the messages,
/// a note when early messages no longer fit the context, the message field, Send / Stop / New chat.
struct ChatPanel: View {
    @EnvironmentObject private var model: AppModel

    var body: some View {
        VStack(alignment: .leading, spacing: 8) {
            if let template = model.chatTemplate, template.supportsSystem {
                TextField(template.defaultSystem ?? "System prompt", text: $model.systemPrompt, axis: .vertical)
                    .lineLimit(1...3)
                    .textFieldStyle(.roundedBorder)
                    .disabled(model.isGenerating)
            } else {
                Text("This model's template has no system turn: no system prompt.")
                    .font(.caption).foregroundStyle(.secondary)
            }
            if let note = model.historyNote {
                Text(note).font(.caption).foregroundStyle(.orange)
            }
            StatsLine()
            if let error = model.errorMessage {
                ErrorBanner(message: error)
            }
            ScrollViewReader { proxy in
                ScrollView {
                    LazyVStack(alignment: .leading, spacing: 8) {
                        ForEach(model.messages) { message in
                            let mine = message.role == "user"
                            let streaming = model.isGenerating && message.id == model.messages.last?.id
                            Text(message.content.isEmpty && streaming ? "…" : message.content)
                                .textSelection(.enabled)
                                .padding(8)
                                .frame(maxWidth: .infinity, alignment: mine ? .trailing : .leading)
                                .background(mine ? Color.accentColor.opacity(0.15) : Color(.secondarySystemBackground),
                                            in: RoundedRectangle(cornerRadius: 8))
                        }
                        Color.clear.frame(height: 1).id("bottom")
                    }
                }
                .onChange(of: model.messages) {
                    proxy.scrollTo("bottom", anchor: .bottom)
                }
            }
            HStack {
                TextField("Message", text: $model.draft, axis: .vertical)
                    .lineLimit(1...4)
                    .textFieldStyle(.roundedBorder)
                    .disabled(model.isGenerating)
                Button {
                    model.send()
                } label: {
                    Image(systemName: "paperplane.fill")
                }
                .buttonStyle(.borderedProminent)
                .disabled(!model.canGenerate || model.draft.isEmpty)
                Button(role: .destructive) {
                    model.stop()
                } label: {
                    Image(systemName: "stop.fill")
                }
                .disabled(!model.isGenerating)
                Button("New") { model.newChat() }
                    .disabled(model.isGenerating || model.messages.isEmpty)
            }
        }
    }
}

import SwiftUI

@main
struct SLMDemoApp: App {
    @StateObject private var model = AppModel()

    var body: some Scene {
        WindowGroup {
            ContentView()
                .environmentObject(model)
                .task {
                    if AppModel.isHeadlessSelfTest {
                        await model.runHeadlessSelfTest()
                    } else {
                        await model.start()
                    }
                }
        }
    }
}

/// Tabs: Generate (a decoder bundle: chat or completion), one per encoder (the bundle itself when
/// it is an encoder, or its companions: Search, Classify, Ask), Self-test and Bundle.
struct ContentView: View {
    @EnvironmentObject private var model: AppModel

    var body: some View {
        TabView {
            if model.manifest == nil || model.hasDecoder {
                GenerateView()
                    .tabItem { Label("Generate", systemImage: "text.cursor") }
            }
            ForEach(model.encoders) { encoder in
                EncoderScreen(encoder: encoder)
                    .tabItem { Label(encoder.role.title, systemImage: encoder.role.systemImage) }
            }
            SelfTestView()
                .tabItem { Label("Self-test", systemImage: "checkmark.seal") }
            BundleInfoView()
                .tabItem { Label("Bundle", systemImage: "shippingbox") }
        }
    }
}

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

struct ContentView: View {
    var body: some View {
        TabView {
            GenerateView()
                .tabItem { Label("Generate", systemImage: "text.cursor") }
            SelfTestView()
                .tabItem { Label("Self-test", systemImage: "checkmark.seal") }
            BundleInfoView()
                .tabItem { Label("Bundle", systemImage: "shippingbox") }
        }
    }
}

import Foundation

/// Where the app finds its bundle: a side-loaded one in Documents/slm first (larger models, or a
/// newer export without rebuilding the app), then the one `slm-export --target ios` put into the
/// app (SLMDemo/Resources/slm, embedded uncompiled as `<App>.app/slm`).
struct BundleLocation: Equatable {
    enum Source: Equatable {
        case documents
        case appResources
    }

    var url: URL
    var source: Source

    var sourceDescription: String {
        switch source {
        case .documents: return "side-loaded (Documents/slm)"
        case .appResources: return "built into the app"
        }
    }
}

enum BundleLocator {
    static let folderName = "slm"

    static var documentsBundleURL: URL {
        let docs = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
        return docs.appendingPathComponent(folderName, isDirectory: true)
    }

    static var appBundleURL: URL? {
        Bundle.main.resourceURL?.appendingPathComponent(folderName, isDirectory: true)
    }

    static func candidates() -> [BundleLocation] {
        var out = [BundleLocation(url: documentsBundleURL, source: .documents)]
        if let app = appBundleURL { out.append(BundleLocation(url: app, source: .appResources)) }
        return out
    }

    /// The first candidate holding a manifest.json, or nil.
    static func find() -> BundleLocation? {
        candidates().first { FileManager.default.fileExists(atPath: $0.url.appendingPathComponent(Manifest.fileName).path) }
    }

    /// What to tell the user when no bundle is found.
    static var missingBundleHelp: String {
        """
        No model bundle found. Either export one into the app before building:
            slm-export --target ios
        (it lands in ios-demo/SLMDemo/Resources/slm), or copy a bundle folder (the one holding \
        manifest.json) to this app's Documents/slm, e.g. with
            xcrun devicectl device copy to --device <DEVICE-ID> --domain-type appDataContainer \
        --domain-identifier org.slmexport.demo --source dist/ios --destination Documents/slm
        or with Finder's Files tab (File Sharing is enabled).
        """
    }
}

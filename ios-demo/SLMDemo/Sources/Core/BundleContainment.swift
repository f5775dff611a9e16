import Foundation

/// A side-loaded bundle must stay inside its folder, as slm-export's own `verify` requires
/// (docs/TRUST.md): before the app reads any of its files, the folder is walked without following
/// links, and a symbolic link whose target lies outside the bundle (or does not exist) or a special
/// file (pipe, socket, device) is named. Links that stay inside are allowed.
enum BundleContainment {
    static func problems(in bundle: URL) -> [String] {
        let fm = FileManager.default
        let root = bundle.resolvingSymlinksInPath().standardizedFileURL.path
        var out: [String] = []

        func walk(_ folder: URL, _ prefix: String) {
            guard let names = try? fm.contentsOfDirectory(atPath: folder.path) else { return }
            for name in names.sorted() {
                let url = folder.appendingPathComponent(name)
                let rel = prefix.isEmpty ? name : prefix + "/" + name
                // attributesOfItem does not follow a final symbolic link.
                guard let type = (try? fm.attributesOfItem(atPath: url.path))?[.type] as? FileAttributeType else {
                    continue
                }
                switch type {
                case .typeSymbolicLink:
                    let target = (try? fm.destinationOfSymbolicLink(atPath: url.path)) ?? "?"
                    let resolved = url.resolvingSymlinksInPath().standardizedFileURL.path
                    if !fm.fileExists(atPath: resolved) {
                        out.append("\(rel) is a symbolic link to \(target), which does not exist")
                    } else if resolved != root && !resolved.hasPrefix(root + "/") {
                        out.append("\(rel) is a symbolic link to \(target), outside the bundle")
                    }
                case .typeDirectory:
                    walk(url, rel)
                case .typeRegular:
                    break
                default:
                    out.append("\(rel) is a special file (a pipe, socket or device), not a regular file")
                }
            }
        }

        walk(bundle, "")
        return out
    }

    /// One sentence for the bundle screen, or nil when the bundle is self-contained.
    static func refusal(for bundle: URL) -> String? {
        let found = problems(in: bundle)
        guard let first = found.first else { return nil }
        let more = found.count > 1 ? " (and \(found.count - 1) more)" : ""
        return "The bundle in \(bundle.path) is not self-contained: \(first)\(more). Nothing was read from it."
    }
}

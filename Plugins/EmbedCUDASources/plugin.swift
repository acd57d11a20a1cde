import Foundation
import PackagePlugin

/// Embeds a target's `cuda/*.cu` and `cuda/*.cuh` files into the binary as Swift string literals at build time, so
/// kernels are real `.cu` files in the repo, compiled by NVRTC at run time, and no file has to travel beside the binary.
/// The public headers (`*.h`) of the C targets it depends on are embedded too, so a header that Swift imports (the
/// kernels' parameter structs, `CKernelParams/include/kernel_params.h`) is the very text NVRTC `#include`s.
@main
struct EmbedCUDASources: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let dir = target.directoryURL.appending(path: "cuda")
        let sources = try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)
            .filter { ["cu", "cuh"].contains($0.pathExtension) }
        var headers: [URL] = []
        for case .target(let dependency) in target.dependencies {
            guard let c = dependency as? ClangSourceModuleTarget, let include = c.publicHeadersDirectoryURL else {
                continue
            }
            headers += try FileManager.default.contentsOfDirectory(at: include, includingPropertiesForKeys: nil)
                .filter { $0.pathExtension == "h" }
        }
        let files = (sources + headers).sorted { $0.lastPathComponent < $1.lastPathComponent }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedCUDASources.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(files.count) CUDA sources and headers of \(target.name)",
                executable: try context.tool(named: "embed-cuda-sources").url,
                arguments: [output.path] + files.map(\.path),
                inputFiles: files,
                outputFiles: [output])
        ]
    }
}

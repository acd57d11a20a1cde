import Foundation
import PackagePlugin

/// Embeds a target's `cuda/*.cu` files into the binary as Swift string literals at build time, so kernels are real
/// `.cu` files in the repo, compiled by NVRTC at run time, and no file has to travel beside the binary.
@main
struct EmbedCUDASources: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let dir = target.directoryURL.appending(path: "cuda")
        let files = try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)
            .filter { ["cu", "cuh"].contains($0.pathExtension) }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedCUDASources.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(files.count) CUDA sources of \(target.name)",
                executable: try context.tool(named: "embed-cuda-sources").url,
                arguments: [output.path] + files.map(\.path),
                inputFiles: files,
                outputFiles: [output])
        ]
    }
}

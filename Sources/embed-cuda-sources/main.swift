import Foundation

// embed-cuda-sources OUTPUT.swift FILE... — writes `CUDASources.files["name"]` (.cu, .cuh, .h) as raw string literals.
let args = CommandLine.arguments
guard args.count >= 2 else {
    FileHandle.standardError.write("usage: embed-cuda-sources OUTPUT.swift FILE...\n".data(using: .utf8)!)
    exit(2)
}
var out = "// Generated at build time by embed-cuda-sources from the target's cuda/ folder and its C dependencies' "
out += "public headers. Do not edit.\n"
out += "public enum CUDASources {\n    /// File name → CUDA C++ source text.\n"
out += "    public static let files: [String: String] = [\n"
var seen: Set<String> = []
for path in args.dropFirst(2) {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    let name = (path as NSString).lastPathComponent
    guard seen.insert(name).inserted else {
        FileHandle.standardError.write("embed-cuda-sources: two files named \(name)\n".data(using: .utf8)!)
        exit(1)
    }
    out += "        \"\(name)\": #####\"\"\"\n\(text)\n\"\"\"#####,\n"
}
out += "    ]\n}\n"
try out.write(toFile: args[1], atomically: true, encoding: .utf8)

import Foundation

// embed-cuda-sources OUTPUT.swift FILE.cu... — writes `CUDASources.files["name.cu"]` as raw string literals.
let args = CommandLine.arguments
guard args.count >= 2 else {
    FileHandle.standardError.write("usage: embed-cuda-sources OUTPUT.swift FILE.cu...\n".data(using: .utf8)!)
    exit(2)
}
var out = "// Generated at build time by embed-cuda-sources from the target's cuda/ folder. Do not edit.\n"
out += "public enum CUDASources {\n    /// File name → CUDA C++ source text.\n    public static let files: [String: String] = [\n"
for path in args.dropFirst(2) {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    let name = (path as NSString).lastPathComponent
    out += "        \"\(name)\": #####\"\"\"\n\(text)\n\"\"\"#####,\n"
}
out += "    ]\n}\n"
try out.write(toFile: args[1], atomically: true, encoding: .utf8)

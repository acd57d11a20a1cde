/// Just enough of the C preprocessor to read the kernels out of the embedded CUDA sources, whose kernels are mostly
/// stamped out by macros (`DECODE_ALL_G(bf16, BF16, 128)` → `decode_partial_strided_bf16_d128_g1(…)` …): line
/// splicing, comments, `#define` (object- and function-like, `##` pasting), `#undef`, and rescanning of each
/// expansion. Other directives (`#include`, `#if`, `#pragma`) are dropped, so every conditional branch counts as
/// taken; a macro name produced at the very end of an expansion does not take its arguments from the text after it.
/// Enough for these files, not a general preprocessor.
struct MiniPreprocessor {
    struct Macro {
        var parameters: [String]?  // nil: object-like
        var body: [String]
    }

    private(set) var macros: [String: Macro] = [:]

    /// The tokens of `source` after preprocessing.
    mutating func tokens(_ source: String) -> [String] {
        var out: [String] = []
        for line in Self.logicalLines(Self.withoutComments(Self.spliced(source))) {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            if trimmed.first == "#" {
                directive(String(trimmed.dropFirst()))
            } else {
                out += expand(Self.tokenize(line), hidden: [])
            }
        }
        return out
    }

    private mutating func directive(_ text: String) {
        let tokens = Self.tokenize(text)
        guard let keyword = tokens.first else { return }
        if keyword == "undef", tokens.count > 1 { macros[tokens[1]] = nil }
        guard keyword == "define", tokens.count > 1 else { return }
        let name = tokens[1]
        // Function-like only when "(" follows the name with no space.
        let afterName = text.drop { $0 == " " }.dropFirst("define".count).drop { $0 == " " }.dropFirst(name.count)
        if afterName.first == "(", let close = tokens.firstIndex(of: ")") {
            let parameters = tokens[3..<close].filter { $0 != "," }
            macros[name] = Macro(parameters: parameters, body: Array(tokens[(close + 1)...]))
        } else {
            macros[name] = Macro(parameters: nil, body: Array(tokens.dropFirst(2)))
        }
    }

    private func expand(_ tokens: [String], hidden: Set<String>) -> [String] {
        var out: [String] = []
        var i = 0
        while i < tokens.count {
            let t = tokens[i]
            guard let macro = macros[t], !hidden.contains(t) else {
                out.append(t)
                i += 1
                continue
            }
            guard let parameters = macro.parameters else {
                out += expand(macro.body, hidden: hidden.union([t]))
                i += 1
                continue
            }
            guard i + 1 < tokens.count, tokens[i + 1] == "(" else {
                out.append(t)
                i += 1
                continue
            }
            // Arguments: split at top-level commas up to the matching ")".
            var arguments: [[String]] = [[]]
            var depth = 0
            var j = i + 2
            while j < tokens.count {
                let u = tokens[j]
                if u == ")" && depth == 0 { break }
                if u == "(" { depth += 1 }
                if u == ")" { depth -= 1 }
                if u == "," && depth == 0 { arguments.append([]) } else { arguments[arguments.count - 1].append(u) }
                j += 1
            }
            if parameters.isEmpty && arguments == [[]] { arguments = [] }
            let raw = Dictionary(uniqueKeysWithValues: zip(parameters, arguments))
            // Substitute: a parameter next to ## takes its argument as written, elsewhere fully expanded.
            var substituted: [String] = []
            for (k, b) in macro.body.enumerated() {
                if let argument = raw[b] {
                    let pasted = (k > 0 && macro.body[k - 1] == "##")
                        || (k + 1 < macro.body.count && macro.body[k + 1] == "##")
                    substituted += pasted ? argument : expand(argument, hidden: hidden)
                } else {
                    substituted.append(b)
                }
            }
            // Paste: a ## b → ab.
            var pasted: [String] = []
            var k = 0
            while k < substituted.count {
                if substituted[k] == "##", let left = pasted.popLast(), k + 1 < substituted.count {
                    pasted.append(left + substituted[k + 1])
                    k += 2
                } else {
                    pasted.append(substituted[k])
                    k += 1
                }
            }
            out += expand(pasted, hidden: hidden.union([t]))
            i = j + 1
        }
        return out
    }

    /// Backslash-newline removed (translation phase 2).
    static func spliced(_ s: String) -> String {
        var out = ""
        var chars = Array(s)[...]
        while let c = chars.popFirst() {
            if c == "\\", chars.first == "\n" {
                chars.removeFirst()
            } else {
                out.append(c)
            }
        }
        return out
    }

    /// Comments replaced by a space; string and character literals kept as they are.
    static func withoutComments(_ s: String) -> String {
        let c = Array(s)
        var out = ""
        var i = 0
        while i < c.count {
            if c[i] == "\"" || c[i] == "'" {
                let quote = c[i]
                out.append(c[i])
                i += 1
                while i < c.count && c[i] != quote && c[i] != "\n" {
                    if c[i] == "\\" && i + 1 < c.count { out.append(c[i]); i += 1 }
                    out.append(c[i])
                    i += 1
                }
                if i < c.count { out.append(c[i]); i += 1 }
            } else if c[i] == "/" && i + 1 < c.count && c[i + 1] == "/" {
                while i < c.count && c[i] != "\n" { i += 1 }
            } else if c[i] == "/" && i + 1 < c.count && c[i + 1] == "*" {
                i += 2
                while i + 1 < c.count && !(c[i] == "*" && c[i + 1] == "/") {
                    if c[i] == "\n" { out.append("\n") }  // keep the line structure
                    i += 1
                }
                i += 2
                out.append(" ")
            } else {
                out.append(c[i])
                i += 1
            }
        }
        return out
    }

    static func logicalLines(_ s: String) -> [String] {
        s.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    }

    /// Identifiers, pp-numbers, string and character literals, `##`, and single punctuation characters.
    static func tokenize(_ s: String) -> [String] {
        let c = Array(s)
        var out: [String] = []
        var i = 0
        func isIdentifier(_ x: Character) -> Bool { x == "_" || x.isLetter || x.isNumber }
        while i < c.count {
            let x = c[i]
            if x == " " || x == "\t" || x == "\r" || x == "\n" {
                i += 1
            } else if x == "_" || x.isLetter {
                var j = i
                while j < c.count && isIdentifier(c[j]) { j += 1 }
                out.append(String(c[i..<j]))
                i = j
            } else if x.isNumber || (x == "." && i + 1 < c.count && c[i + 1].isNumber) {
                var j = i + 1
                while j < c.count {
                    if "eEpP".contains(c[j]) && j + 1 < c.count && "+-".contains(c[j + 1]) {
                        j += 2
                    } else if isIdentifier(c[j]) || c[j] == "." {
                        j += 1
                    } else {
                        break
                    }
                }
                out.append(String(c[i..<j]))
                i = j
            } else if x == "\"" || x == "'" {
                var j = i + 1
                while j < c.count && c[j] != x {
                    if c[j] == "\\" { j += 1 }
                    j += 1
                }
                j = min(j + 1, c.count)
                out.append(String(c[i..<j]))
                i = j
            } else if x == "#" && i + 1 < c.count && c[i + 1] == "#" {
                out.append("##")
                i += 2
            } else {
                out.append(String(x))
                i += 1
            }
        }
        return out
    }
}

/// An `extern "C" __global__` function found in preprocessed tokens: its name and parameters (each as its tokens).
struct KernelDeclaration: Hashable {
    var name: String
    var parameters: [[String]]

    /// Every `extern "C" __global__ void [__launch_bounds__(…)] name(…)` in `tokens`.
    static func all(in tokens: [String]) -> [KernelDeclaration] {
        var found: [KernelDeclaration] = []
        var i = 0
        func skipParentheses(_ k: inout Int) {
            var depth = 0
            repeat {
                if tokens[k] == "(" { depth += 1 }
                if tokens[k] == ")" { depth -= 1 }
                k += 1
            } while depth > 0 && k < tokens.count
        }
        while i + 3 < tokens.count {
            guard tokens[i] == "extern", tokens[i + 1] == "\"C\"", tokens[i + 2] == "__global__" else {
                i += 1
                continue
            }
            var k = i + 3
            while k < tokens.count && tokens[k] != "(" && tokens[k] != "__launch_bounds__" { k += 1 }
            if k < tokens.count && tokens[k] == "__launch_bounds__" {
                k += 1
                skipParentheses(&k)
            }
            // tokens[k - 1] is the name when tokens[k] opens the parameter list.
            while k < tokens.count && tokens[k] != "(" { k += 1 }
            guard k < tokens.count else { break }
            let name = tokens[k - 1]
            var parameters: [[String]] = [[]]
            var depth = 0
            var j = k + 1
            while j < tokens.count {
                let t = tokens[j]
                if t == ")" && depth == 0 { break }
                if t == "(" { depth += 1 }
                if t == ")" { depth -= 1 }
                if t == "," && depth == 0 { parameters.append([]) } else { parameters[parameters.count - 1].append(t) }
                j += 1
            }
            if parameters == [[]] { parameters = [] }
            found.append(KernelDeclaration(name: name, parameters: parameters))
            i = j
        }
        return found
    }
}

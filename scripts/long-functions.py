#!/usr/bin/env python3
# usage: python3 scripts/long-functions.py [--max LINES] [DIR...]   (default: --max 80 engine harness reports)
#
# Prints every `fn` of non-test code longer than LINES lines, longest first, as
# `path:line: name (N lines)`, and exits 1 if there is one (0 if none, 2 for usage).
# A function's length runs from its `fn` line to its closing brace, both counted (doc
# comments and attributes not). Skipped as test code: directories named tests,
# benches and target, any item under `#[cfg(test)]` or `#[test]` (a `mod tests {…}`
# block, a helper) and the file of a `#[cfg(test)] mod name;`. The scan knows Rust's
# comments, strings (raw and byte too) and char literals, so braces inside them do not
# count; it does not expand macros.
#
# A function that is a table (one literal listing flat fields or entries, nothing to
# split into steps) is exempt when the line `// long-functions: table`, best followed by
# why, is among the comment and attribute lines right above its `fn` line:
#
#     /// An empty result, for the harness to fill.
#     // long-functions: table (one struct literal, a field a line)
#     fn default() -> Self {
#
# Exempt functions are counted on stderr, not listed.
import argparse
import os
import re
import sys

SKIPPED_DIRS = {"tests", "benches", "target"}
FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")
TEST_ATTRIBUTE = re.compile(r"#\[\s*(cfg\s*\(\s*test\s*\)|test)\s*\]")
MOD_FILE = re.compile(r"\bmod\s+([A-Za-z_][A-Za-z0-9_]*)\s*;")
TABLE_MARKER = re.compile(r"^\s*// long-functions: table\b")


def code_only(text):
    """`text` with comments, strings and char literals blanked (newlines kept), so that
    braces, `fn` and attributes are found only in code."""
    out = []
    i, n = 0, len(text)

    def blank(start, end):
        out.append("".join("\n" if c == "\n" else " " for c in text[start:end]))

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            blank(i, end)
            i = end
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif (m := re.compile(r'b?r(#*)"').match(text, i)) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            closing = '"' + m.group(1)
            end = text.find(closing, m.end())
            end = n if end < 0 else end + len(closing)
            blank(i, end)
            i = end
        elif c == '"' or (text.startswith('b"', i) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_"))):
            j = i + (2 if c == "b" else 1)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(i, j + 1)
            i = j + 1
        elif c == "'" or (text.startswith("b'", i) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_"))):
            # A char literal ('x', '\n', '\u{7f}', b'x'), else a lifetime or label.
            start = i + (2 if c == "b" else 1)
            m = re.compile(r"(\\u\{[0-9A-Fa-f_]*\}|\\x[0-9A-Fa-f]{2}|\\.|[^\\'\n])'").match(text, start)
            if m:
                blank(i, m.end())
                i = m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def item_end(code, start):
    """Where the item starting at `start` ends: after its matching `}` when its first
    `{` comes before any `;`, else after the `;`."""
    brace, semicolon = code.find("{", start), code.find(";", start)
    if brace < 0 or (0 <= semicolon < brace):
        return (semicolon + 1) if semicolon >= 0 else len(code)
    depth = 0
    for j in range(brace, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(code)


def test_spans(code):
    """(start, end) of every item under a test attribute, and the module names declared
    by `#[cfg(test)] mod name;`."""
    spans, modules = [], []
    for m in TEST_ATTRIBUTE.finditer(code):
        # The item starts after this and any further attributes.
        j = m.end()
        while True:
            rest = re.compile(r"\s*#\[").match(code, j)
            if not rest:
                break
            depth, j = 1, rest.end()
            while j < len(code) and depth:
                depth += {"[": 1, "]": -1}.get(code[j], 0)
                j += 1
        end = item_end(code, j)
        spans.append((m.start(), end))
        if module := MOD_FILE.match(code[j:end].strip()):
            modules.append(module.group(1))
    return spans, modules


def marked_table(lines, fn_line):
    """Whether the comment and attribute lines right above line `fn_line` (1-based) of
    the source `lines` hold the table marker."""
    for line in reversed(lines[: fn_line - 1]):
        if TABLE_MARKER.match(line):
            return True
        if not line.lstrip().startswith(("//", "#[")):
            return False
    return False


def long_functions(path, source, code, max_lines):
    """The functions of `code` (`source` blanked by `code_only`) longer than
    `max_lines`, and how many more are exempt as tables."""
    spans, _ = test_spans(code)
    lines = source.split("\n")
    found, tables = [], 0
    for m in FN.finditer(code):
        if any(start <= m.start() < end for start, end in spans):
            continue
        end = item_end(code, m.end())
        if code[end - 1] != "}":
            continue  # A declaration without a body (trait method, extern fn).
        first = code.count("\n", 0, m.start()) + 1
        last = code.count("\n", 0, end - 1) + 1
        if last - first + 1 <= max_lines:
            continue
        if marked_table(lines, first):
            tables += 1
        else:
            found.append((last - first + 1, path, first, m.group(1)))
    return found, tables


def test_module_files(path, code):
    """Files of `#[cfg(test)] mod name;` declared in `path`."""
    _, modules = test_spans(code)
    directory, file = os.path.split(path)
    if file not in ("lib.rs", "main.rs", "mod.rs"):
        directory = os.path.join(directory, file[: -len(".rs")])
    files = set()
    for module in modules:
        files.add(os.path.normpath(os.path.join(directory, module + ".rs")))
        files.add(os.path.normpath(os.path.join(directory, module, "mod.rs")))
    return files


def main():
    parser = argparse.ArgumentParser(description="Lists functions of non-test Rust code longer than --max lines.")
    parser.add_argument("--max", type=int, default=80, help="longest allowed function, in lines (default 80)")
    parser.add_argument("dirs", nargs="*", default=["engine", "harness", "reports"])
    args = parser.parse_args()
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

    sources = {}
    for root in args.dirs:
        if not os.path.isdir(root):
            print(f"error: no directory {root}", file=sys.stderr)
            return 2
        for directory, subdirs, files in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS)
            for file in sorted(files):
                if file.endswith(".rs"):
                    path = os.path.normpath(os.path.join(directory, file))
                    with open(path, encoding="utf-8") as handle:
                        source = handle.read()
                    sources[path] = (source, code_only(source))
    test_files = set()
    for path, (_, code) in sources.items():
        test_files |= test_module_files(path, code)
    found, tables = [], 0
    for path, (source, code) in sources.items():
        if path not in test_files:
            more, more_tables = long_functions(path, source, code, args.max)
            found += more
            tables += more_tables
    found.sort(key=lambda entry: (-entry[0], entry[1], entry[2]))
    for lines, path, line, name in found:
        print(f"{path}:{line}: {name} ({lines} lines)")
    print(f"{len(found)} function(s) over {args.max} lines ({tables} more exempt as tables)", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

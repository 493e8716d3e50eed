#!/usr/bin/env python3
"""Every Catch2 test case name must reach ctest whole: catch_discover_tests registers each
name as a CMake list element, so a ';' in a name splits it, and ctest then runs a filter that
matches no test case, which Catch2 reports as a pass. Fails naming each such test case."""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1])
bad = []
for path in sorted(root.rglob("*.cpp")):
    text = path.read_text(encoding="utf-8", errors="replace")
    for m in re.finditer(r'\b(?:TEST_CASE|TEMPLATE_TEST_CASE|SCENARIO)\s*\(\s*"((?:[^"\\]|\\.)*)"', text):
        if ";" in m.group(1):
            line = text.count("\n", 0, m.start()) + 1
            bad.append("%s:%d: %s" % (path.relative_to(root), line, m.group(1)))
if bad:
    print("test case names with ';' (ctest would run none of them; use ',' instead):")
    print("\n".join(bad))
    sys.exit(1)
print("ok: no test case name holds a ';'")

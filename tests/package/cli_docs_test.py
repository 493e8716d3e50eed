#!/usr/bin/python3
"""The man pages, the bash completion and the package version follow the programs:

- every command, subcommand and --option that `syncctl help` lists is in syncctl.1, and the
  completion offers it where it goes (bash runs the completion function; a subcommand of
  `CMD PROJECT [sub ...]` after the project);
- every option that `fieldsyncd --help` lists is in fieldsyncd.8;
- `fieldsyncd --version`, `syncctl --version`, debian/changelog and both man pages' headers
  name the same version;
- `syncctl COMMAND --help` and `syncctl help COMMAND` print that command's usage, exit 0, and
  describe every option the usage shows.

Usage: cli_docs_test.py SOURCE_DIR PATH/TO/fieldsyncd PATH/TO/syncctl
"""
import re
import subprocess
import sys

src, fieldsyncd, syncctl = sys.argv[1:4]
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def man_text(path):
    # The option as written in troff: "\-\-wait" (or a plain "-" in a comment-free line).
    with open(path, encoding="utf-8") as f:
        return f.read().replace("\\-", "-").replace("\\fB", "").replace("\\fI", "").replace(
            "\\fR", "")


def complete(words):
    """What the completion offers for `syncctl WORDS...` with the cursor on the last word."""
    script = (
        f"source {src}/cli/syncctl.bash-completion\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _syncctl\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n')
    out = subprocess.run(["bash", "-c", script, "bash", "syncctl", *words], capture_output=True,
                         text=True, check=True).stdout
    return set(out.split())


# --- syncctl: commands, subcommands and options from its help ---
help_text = run(syncctl, "help")
forms = []  # (command, subcommand or None, usage text)
for line in help_text.splitlines():
    m = re.match(r"^  (\w+)(.*)$", line) or re.match(r"^       syncctl (\w+)(.*)$", line)
    if not m:
        continue
    cmd, rest = m.group(1), m.group(2)
    sub = re.match(r"^ ([a-z]+)\b", rest)
    forms.append((cmd, sub.group(1) if sub else None, rest))
    # Alternatives in brackets: "peers [add ... | rm PEER | show PEER]".
    for alt in re.findall(r"(?:\[|\| )([a-z]+)\b", rest):
        forms.append((cmd, alt, rest))

commands = sorted({c for c, _, _ in forms})
check(len(commands) >= 15, f"expected at least 15 commands in `syncctl help`, got {commands}")
syncctl_man = man_text(f"{src}/docs/man/syncctl.1")
top = complete([""])
for cmd in commands:
    check(cmd in top, f"completion of `syncctl <TAB>` lacks {cmd}")
    check(re.search(rf"^(\.B |\.BI \"|){cmd}\b", syncctl_man, re.M),
          f"syncctl.1 has no entry for the command {cmd}")
for cmd, sub, rest in forms:
    if sub:
        # "CMD PROJECT [sub ... | sub ...]": the subcommand follows the project.
        words = [cmd, "PROJECT", ""] if rest.startswith(" PROJECT [") else [cmd, ""]
        check(sub in complete(words),
              f"completion of `syncctl {' '.join(words[:-1])} <TAB>` lacks {sub}")
        check(f"{cmd} {sub}" in syncctl_man or sub in syncctl_man,
              f"syncctl.1 lacks `{cmd} {sub}`")
    # An option belongs to the command or to one of its subcommands (the bracketed forms do
    # not say which): it must be offered after one of them.
    subs = [None] + sorted({s for c, s, _ in forms if c == cmd and s})
    offered = set()
    for s in subs:
        offered |= complete([cmd, s, "--"] if s else [cmd, "--"])
    for opt in re.findall(r"--[a-z][a-z-]*", rest):
        check(opt in offered, f"completion of `syncctl {cmd} [SUBCOMMAND] --` lacks {opt}")
        check(opt in syncctl_man, f"syncctl.1 lacks {opt} (of {cmd})")
for opt in re.findall(r"--[a-z][a-z-]*", help_text.splitlines()[0]):
    check(opt in complete(["--"]), f"completion of `syncctl --` lacks {opt}")
    check(opt in syncctl_man, f"syncctl.1 lacks the option {opt}")

# --- fieldsyncd: options from its help ---
daemon_help = run(fieldsyncd, "--help")
fieldsyncd_man = man_text(f"{src}/docs/man/fieldsyncd.8")
daemon_opts = sorted(set(re.findall(r"--[a-z][a-z-]*", daemon_help)))
check(len(daemon_opts) >= 6, f"expected at least 6 options in `fieldsyncd --help`: {daemon_opts}")
for opt in daemon_opts:
    check(re.search(rf"^\.(B|BI|BR) {re.escape(opt)}\b", fieldsyncd_man, re.M),
          f"fieldsyncd.8 has no entry for {opt}")

# --- one version everywhere ---
version = run(fieldsyncd, "--version").split()[-1]
with open(f"{src}/debian/changelog", encoding="utf-8") as f:
    changelog = re.match(r"^fieldsync \(([^)]+)\)", f.readline())
check(changelog and changelog.group(1).split("-")[0] == version,
      f"debian/changelog's version {changelog and changelog.group(1)} is not {version}")
syncctl_version = run(syncctl, "--version").split()
check(syncctl_version == ["syncctl", version],
      f"`syncctl --version` says {syncctl_version}, not syncctl {version}")
# --- every command has its own --help (and `help COMMAND`): its forms, exit 0 ---
for cmd in commands:
    for argv in ([cmd, "--help"], ["help", cmd]):
        r = subprocess.run([syncctl, *argv], capture_output=True, text=True)
        check(r.returncode == 0 and r.stdout.startswith(f"usage: syncctl {cmd}")
              and "commands:" not in r.stdout,
              f"`syncctl {' '.join(argv)}` does not print that command's usage alone "
              f"(exit {r.returncode}): {r.stdout[:80]!r}")
# --- each command's --help lists (generated from its table of options) every option its
# usage shows, with a description ---
for cmd in commands:
    text = subprocess.run([syncctl, cmd, "--help"], capture_output=True, text=True).stdout
    listed = set(re.findall(r"^  (--[a-z][a-z-]*) ", text, re.M))
    for _, _, rest in [f for f in forms if f[0] == cmd]:
        for opt in re.findall(r"--[a-z][a-z-]*", rest):
            check(opt in listed, f"`syncctl {cmd} --help` does not describe {opt}")
r = subprocess.run([syncctl, "nosuchcommand", "--help"], capture_output=True, text=True)
check(r.returncode == 2 and "unknown command" in r.stderr,
      "`syncctl nosuchcommand --help` is not a usage error")
for page in (syncctl_man, fieldsyncd_man):
    th = re.search(r'^\.TH \S+ \d "[^"]*" "fieldsync ([^"]+)"', page, re.M)
    check(th and th.group(1) == version, f"a man page's .TH names {th and th.group(1)}, not {version}")

if failures:
    print("FAIL:\n  " + "\n  ".join(failures))
    sys.exit(1)
print(f"ok: {len(commands)} syncctl commands and {len(daemon_opts)} fieldsyncd options are in the "
      f"man pages and the completion; version {version} everywhere")

#!/usr/bin/env python3
"""Writes packaging/ringside.toml.5 (roff) from docs/configuration.md.

Run after editing the reference: python3 packaging/gen-toml-man.py
tests/blackbox/examples.rs checks that both name every key the parser accepts.
"""
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
md = (root / "docs/configuration.md").read_text()


def roff(text):
    text = text.replace("\\", "\\e")
    text = re.sub(r"`([^`]*)`", r"\\fB\1\\fR", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.replace("**", "")
    text = text.replace("-", "\\-")
    for char, escape in (("\u2014", "\\(em"), ("\u2192", "\\(->"), ("\u2026", "..."), ("\u2013", "\\(en")):
        text = text.replace(char, escape)
    # Any other non-ASCII character as groff's Unicode escape.
    text = "".join(c if ord(c) < 128 else "\\[u%04X]" % ord(c) for c in text)
    lines = []
    for line in text.split("\n"):
        if line.startswith(".") or line.startswith("'"):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


out = [
    '.TH RINGSIDE.TOML 5 "" "ringside" "File Formats"',
    ".SH NAME",
    "ringside.toml \\- configuration file of the ringside reverse proxy",
    ".SH SYNOPSIS",
    "/etc/ringside/ringside.toml",
    ".SH DESCRIPTION",
]
section = None
in_code = False
for line in md.split("\n"):
    if line.startswith("```"):
        out.append(".EE" if in_code else ".EX")
        in_code = not in_code
        continue
    if in_code:
        out.append(roff(line) if line else "")
        continue
    if line.startswith("# "):
        continue
    if line.startswith("## "):
        out.append(".SH " + roff(line[3:].upper()))
        continue
    if line.startswith("| ---") or line.startswith("| key "):
        continue
    if line.startswith("| "):
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if len(cells) == 5:
            key, default, unit, nginx, meaning = cells
            out.append(".TP")
            out.append(roff(f"{key}  (default {default}; {unit})"))
            out.append(roff(meaning + ("." if not meaning.endswith(".") else "")))
            if nginx not in ("—", ""):
                out.append(".br")
                out.append(roff(f"nginx: {nginx}"))
        elif len(cells) == 3:
            key, nginx, meaning = cells
            out.append(".TP")
            out.append(roff(key))
            out.append(roff(f"{meaning} (nginx: {nginx})"))
        continue
    if line.strip():
        out.append(roff(line))
    else:
        out.append(".PP")
out += [
    ".SH FILES",
    "/usr/share/doc/ringside/configuration.md, /usr/share/doc/ringside/examples/",
    ".SH SEE ALSO",
    "ringside(8), nginx(8)",
]
# Collapse repeated paragraph marks.
text = "\n".join(out)
text = re.sub(r"(\.PP\n)+", ".PP\n", text)
(root / "packaging/ringside.toml.5").write_text(text + "\n")

"""Secret values are never printed: everything the agent says or logs passes through `redact`.

The manifest on stdin lists its secret values (`secret_values`: each as given and as written into
its file), and so do the full manifests kept for repair and rollback (read from
/var/lib/outpost/applied and previous/, never written here). Progress lines (stderr), the final
line (stdout) and every command's output go through here; a closed pipe never stops the work.
"""

import contextlib
import json
import os
import re
import shlex

from .base import STATE_DIR, AgentError, one_line
from .host import Host

HIDDEN = "<secret hidden>"  # what the agent prints where a secret value stood
SECRET_PIECE = 8          # a multi-line secret's lines this long are hidden on their own too
GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
              "\v": "\\v", "\\": "\\\\", '"': '\\"'}
SHELL_SPECIAL = re.compile(r"[ \t!\"#$&'()*;<>?\[\\\]^`{|}~]")   # what bash's printf %q escapes


def go_quoted(text):
    """TEXT as Go's %q / strconv.Quote writes it, without the outer quotes (Caddy's errors quote
    a bad value so: `time: invalid duration "..."`)."""
    out = []
    for ch in text:
        if ch in GO_ESCAPES:
            out.append(GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def json_inner(text):
    return json.dumps(text, ensure_ascii=False)[1:-1]


def quoted_forms(value):
    """VALUE as tools may print it back: as is, JSON-escaped (JSON logs: Caddy's journal lines),
    Go-quoted (%q: Caddy's errors), a Go-quoted error inside a JSON log line, shell-quoted
    (shlex.quote, the inside of a '...' word, backslash-escaped as bash's printf %q writes it).
    Each is searched whole, so the quotes around it do not matter."""
    return {value, json.dumps(value)[1:-1], json_inner(value), go_quoted(value), json_inner(go_quoted(value)),
            shlex.quote(value), value.replace("'", "'\\''"), SHELL_SPECIAL.sub(lambda m: "\\" + m.group(0), value)}


class Masking(Host):
    """Progress, the final line and external commands, with every known secret value hidden."""

    def log(self, message):
        """Progress on stderr. A closed pipe (the SSH session dropped) must not stop an apply
        halfway: the line is lost, the work goes on."""
        try:
            print(f"  {self.redact(message)}", file=self.log_to, flush=True)
        except OSError:
            pass

    # The manifest on stdin lists its secret values (`secret_values`: each as given and as written
    # into its file), and so do the full manifests kept for repair and rollback. A tool's output
    # (a validator quoting the line it rejects, `nginx -t`, `haproxy -c`, `caddy validate`,
    # `sshd -t` all do), a health response, haproxy's answers and journal lines pass through
    # redact() before they reach an error, a progress line, the agent log or stdout.
    def learn_secrets(self, values):
        """Add secret VALUES (and the lines of multi-line ones) to what redact() hides, each also
        in the forms tools re-quote it in (quoted_forms)."""
        pieces = set()
        for value in values:
            if value:
                lines = [line.strip() for line in value.splitlines()]
                for piece in [value, *(line for line in lines if len(lines) > 1 and len(line) >= SECRET_PIECE)]:
                    pieces.update(quoted_forms(piece))
        if not pieces <= self.secret_values:
            self.secret_values |= pieces
            self.secret_re = re.compile("|".join(re.escape(p) for p in sorted(
                self.secret_values, key=lambda p: (-len(p), p))))

    def redact(self, text):
        """TEXT with every known secret value replaced by HIDDEN."""
        if not self.kept_secrets_read:
            self.kept_secrets_read = True
            for which in ("applied", "previous"):
                folder = self.path(f"{STATE_DIR}/{which}")
                for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
                    kept = self.load_json(f"{STATE_DIR}/{which}/{entry}") or {}
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        values = json.loads(kept.get("manifest") or "{}").get("secret_values") or []
                        self.learn_secrets([v for v in values if isinstance(v, str)])
        text = str(text)
        return self.secret_re.sub(HIDDEN, text) if self.secret_re else text

    def run(self, argv, check=True, **kwargs):
        """Run argv through the runner; (exit code, its output with secrets hidden, raw stdout).
        The raw stdout is for parsing only, never for a message."""
        code, output, stdout = self.runner(argv, **kwargs)
        output = self.redact(output)
        if check and code != 0:
            raise AgentError(f"`{shlex.join(argv)}` failed (exit {code}): {one_line(output)}")
        return code, output, stdout

    def say(self, line):
        """The final line on stdout; a deployer that went away (closed pipe) does not undo the work."""
        try:
            print(self.redact(line), flush=True)
        except OSError:
            pass

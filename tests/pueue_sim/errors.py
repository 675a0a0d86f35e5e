"""How a failing `pueue` prints its error on stderr (exit code 1).

`main()` returns `Result<()>`; Rust prints `Error: {err:?}` and exits with 1.

* 3.x uses `anyhow`, whose Debug form is the outermost message, then `Caused by:` with the rest of
  the chain (numbered from 0 when there is more than one cause)::

      Error: Failed to initialize client.

      Caused by:
          0: Failed to initialize stream.
          1: I/O error at path "/run/user/1000/pueue_miner.socket" while connecting to daemon. ...:
             No such file or directory (os error 2)

* 4.x uses `color_eyre`, which numbers every message, colours it with ANSI escapes even when stderr
  is not a terminal (opened before a message, closed after its last line), repeats the number on
  every line of a multi-line message, leaves a space after `Error:`, and appends a `Location:` and a
  backtrace hint (as captured from 4.0.4: tests/fixtures/pueue/captures/4.0.4/*.stderr)::

      Error:
         0: Failed to initialize client.
         1: Failed to initialize stream.
         2: I/O error at path "..." while connecting to daemon. Did you start it?:
         2: No such file or directory (os error 2)

      Location:
         pueue_lib/src/network/client.rs:85

      Backtrace omitted. Run with RUST_BACKTRACE=1 environment variable to display it.
      Run with RUST_BACKTRACE=full to include source snippets.
"""

from __future__ import annotations

import os

RED = "\x1b[91m"
PURPLE = "\x1b[35m"
RESET = "\x1b[0m"


def _indent(text: str, first: str, rest: str) -> str:
    lines = text.split("\n")
    return first + lines[0] + "".join("\n" + rest + line for line in lines[1:])


def render_anyhow(chain: list[str]) -> str:
    out = chain[0]
    causes = chain[1:]
    if causes:
        out += "\n\nCaused by:"
        for n, cause in enumerate(causes):
            if len(causes) > 1:
                out += "\n" + _indent(cause, f"{n: >5}: ", " " * 7)
            else:
                out += "\n" + _indent(cause, "    ", "    ")
    return "Error: " + out + "\n"


def render_color_eyre(chain: list[str], location: str) -> str:
    out = "Error: "
    for n, message in enumerate(chain):
        out += "\n" + _indent(RED + message + RESET, f"{n: >4}: ", f"{n: >4}: ")
    file, _, line = location.rpartition(":")
    out += f"\n\nLocation:\n   {PURPLE}{file}{RESET}:{PURPLE}{line}{RESET}"
    if os.environ.get("RUST_BACKTRACE", "0") == "0":
        # With RUST_BACKTRACE set, color-eyre prints a backtrace here instead (not simulated).
        out += (
            "\n\nBacktrace omitted. Run with RUST_BACKTRACE=1 environment variable to display it.\n"
            "Run with RUST_BACKTRACE=full to include source snippets."
        )
    return out + "\n"


def render(flavor: str, chain: list[str], location: str = "pueue/src/bin/pueue.rs:56") -> str:
    """The complete stderr text of a failed `pueue`/`pueued` for this version."""
    if flavor == "v3":
        return render_anyhow(chain)
    return render_color_eyre(chain, location)

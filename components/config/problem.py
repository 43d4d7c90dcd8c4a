"""`KeyProblem`: a broken rule that names the stack-config key holding the bad value.

Rules live in the config layer (`model.py`, `checks.py`, `repository.py`) wherever they can. A
rule that only a renderer can see (it needs the rendered text) raises `KeyProblem(key, message)`
there; `parse` (components/load.py, above the render layer) runs every renderer on every host and
reports these beside the config layer's own problems, as
`Pulumi.<stack>.yaml: outpost:<key>: <message>`. Any other exception out of a renderer is a bug:
the fuzzer in tests/fuzz looks for them.
"""

from __future__ import annotations


class KeyProblem(ValueError):
    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message

"""Expected failures: the CLI prints them as one line and exits with status 2."""


class PatchbenchError(Exception):
    """A problem with the user's input (spec, names, data), not a bug.

    The CLI prints ``patchbench: error: <message>`` and exits 2 without a traceback;
    any other exception keeps its traceback because it is a bug.
    """


class SpecError(PatchbenchError):
    """A benchmark spec that cannot be loaded or validated."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))

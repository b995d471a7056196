"""YAML in: ``yaml.safe_load``, refusing hostile nesting before the composer sees it."""

from __future__ import annotations

from typing import Any

import yaml

from .models import MAX_YAML_DEPTH


class TooDeep(yaml.YAMLError):
    def __init__(self, mark: Any):
        super().__init__()
        self.problem_mark = mark
        self.problem = f"nested deeper than {MAX_YAML_DEPTH} levels"


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load`` after measuring the nesting with the (iterative) event parser: the
    composer recurses per level and would overflow the stack on hostile input."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise TooDeep(event.start_mark)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return yaml.safe_load(text)

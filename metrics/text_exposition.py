"""The Prometheus text format (version 0.0.4) for the container collector, written straight
from the series table.

prometheus-client's generate_latest validates, escapes and sorts every label name of every
sample; at 100 containers (some 6000 samples) that cost more than reading the cgroups. Here
each family's line is one format string built once, with the label values in the order
generate_latest sorts the names into, so the output is byte for byte the same.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.utils import floatToGoString

from metrics.cadvisor_series import COUNTER, GAUGE

# The very function generate_latest formats values with, typed for mypy.
_go_float: Callable[[float], str] = floatToGoString


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class FamilyText:
    """One family's header and sample line; the line takes the label values in the table's
    order, then the value already formatted."""

    __slots__ = ("header", "line")

    def __init__(self, name: str, kind: str, help_text: str, labels: tuple[str, ...]) -> None:
        # As CounterMetricFamily and generate_latest expose them: a counter keeps its _total,
        # a counter without one (cAdvisor's container_memory_failcnt) goes out untyped.
        if kind == COUNTER and name.endswith("_total"):
            exposed_type = "counter"
        elif kind == GAUGE:
            exposed_type = "gauge"
        else:
            exposed_type = "untyped"
        help_line = help_text.replace("\\", r"\\").replace("\n", r"\n")
        self.header = f"# HELP {name} {help_line}\n# TYPE {name} {exposed_type}\n"
        self.line = _line_template(name, labels)


def _line_template(name: str, labels: tuple[str, ...]) -> str:
    order = sorted(range(len(labels)), key=labels.__getitem__)
    pairs = ",".join(f'{labels[i]}="{{{i}}}"' for i in order)
    labelled = f"{{{{{pairs}}}}}" if labels else ""
    return f"{name}{labelled} {{{len(labels)}}}\n"


class ValueText(dict[float, str]):
    """floatToGoString remembered for one scrape, as most figures repeat (0.0 above all);
    a dict so that a known value costs a lookup, not a call."""

    def __missing__(self, value: float) -> str:
        text = self[value] = _go_float(value)
        return text


class LabelText(dict[str, str]):
    """Escaped label values remembered for one scrape: the same few repeat in every line."""

    def __missing__(self, value: str) -> str:
        text = self[value] = escape_label_value(value)
        return text
